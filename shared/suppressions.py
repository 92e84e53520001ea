"""Suppressed ids as every ingest worker holds them, reloaded every second (shared.reload).

An erasure with `suppress: true` records its ids here in the transaction that records the job,
before its 202 is sent; the worker that answered adds them to its copy at once, the others
within a reload. Ingest refuses any new event whose userId or anonymousId is one of them
(`user_suppressed`), so a request checks a set in memory and costs no query.
"""

from __future__ import annotations

import time

from psycopg_pool import AsyncConnectionPool

LOAD_SUPPRESSIONS = "SELECT project_id, user_id FROM suppressions"

# A reload that began before this worker's own write committed may not see it: ids added here
# stay in force for this long whatever a reload says, well past one reload and its query.
LOCAL_HOLD_SECONDS = 10.0

NONE: frozenset[str] = frozenset()


class Suppressions:
    """project -> suppressed ids; replaced whole on each reload, so readers need no lock."""

    def __init__(self) -> None:
        self._ids: dict[str, frozenset[str]] = {}
        self._added: list[tuple[float, str, frozenset[str]]] = []  # (monotonic time, project, ids)
        self.loaded_at: float | None = None

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    def ids_for(self, project: str) -> frozenset[str]:
        return self._ids.get(project, NONE)

    def add(self, project: str, ids: frozenset[str]) -> None:
        self._added.append((time.monotonic(), project, ids))
        self._ids = {**self._ids, project: self.ids_for(project) | ids}

    def remove(self, project: str, user_id: str) -> None:
        self._added = [(at, p, ids - {user_id} if p == project else ids) for at, p, ids in self._added]
        self._ids = {**self._ids, project: self.ids_for(project) - {user_id}}

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._ids.values())

    async def refresh(self, pool: AsyncConnectionPool, timeout: float) -> None:
        async with pool.connection(timeout=timeout) as conn:
            rows = await (await conn.execute(LOAD_SUPPRESSIONS)).fetchall()
        found: dict[str, set[str]] = {}
        for project, user_id in rows:
            found.setdefault(project, set()).add(user_id)
        horizon = time.monotonic() - LOCAL_HOLD_SECONDS
        self._added = [entry for entry in self._added if entry[0] >= horizon]
        for _, project, ids in self._added:
            found.setdefault(project, set()).update(ids)
        self._ids = {project: frozenset(ids) for project, ids in found.items()}
        self.loaded_at = time.monotonic()
