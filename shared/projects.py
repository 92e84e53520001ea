"""Per-project settings as every worker holds them, reloaded every second (shared.reload).

A project's row holds only what it set itself through `PATCH /v1/project`; a key it never set
falls back to the service's default (`TALLY_RETENTION_DAYS`), and `retention_days: null` that it
set means "keep forever" whatever the default. Ingest refuses events older than the retention
(`outside_retention`), the aggregates say where the kept data starts, and the retention job
removes what aged out: all three read the same copy and the same cutoff.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from psycopg_pool import AsyncConnectionPool

LOAD_PROJECTS = "SELECT project_id, settings FROM projects"

# The cutoff is a whole UTC hour, so that an hour of the rollups is removed whole or kept whole,
# and the aggregates of kept hours never need the raw events: an event is removed once its
# hour is entirely older than the retention (it is kept between N days and N days + 1 hour).
HOUR = timedelta(hours=1)


def retained_from(days: int | None, now: datetime) -> datetime | None:
    """The oldest instant kept under a retention of `days` (None: everything is kept)."""
    if days is None:
        return None
    cutoff = now - timedelta(days=days)
    return cutoff.replace(minute=0, second=0, microsecond=0)


class ProjectSettings:
    """project -> the settings it set; replaced whole on each reload, so readers need no lock."""

    def __init__(self, default_retention_days: int | None) -> None:
        self.default_retention_days = default_retention_days
        self._settings: dict[str, dict] = {}
        self.loaded_at: float | None = None

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    def projects(self) -> list[str]:
        """The projects that set anything themselves."""
        return list(self._settings)

    def retention_days(self, project: str) -> int | None:
        own = self._settings.get(project)
        if own is not None and "retention_days" in own:
            return own["retention_days"]
        return self.default_retention_days

    def retained_from(self, project: str, now: datetime) -> datetime | None:
        return retained_from(self.retention_days(project), now)

    def apply(self, project: str, settings: dict) -> None:
        """A change this worker just committed holds here at once, before the next reload."""
        self._settings = {**self._settings, project: settings}

    def __len__(self) -> int:
        return len(self._settings)

    async def refresh(self, pool: AsyncConnectionPool, timeout: float) -> None:
        async with pool.connection(timeout=timeout) as conn:
            rows = await (await conn.execute(LOAD_PROJECTS)).fetchall()
        self._settings = {project: settings for project, settings in rows}
        self.loaded_at = time.monotonic()
