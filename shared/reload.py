"""Per-process copies of small tables, reloaded every second by each worker.

Revoked tokens and the tracking plan are read on every request and written rarely, so each
worker keeps a copy and reloads it in the background: a request costs no query, and a write by
any process reaches every worker within one interval plus one query. If a reload fails (the
database is down, the pool is busy) the last copy stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from shared.outage import OutageLog

log = logging.getLogger("tally.reload")

RELOAD_SECONDS = 1.0


class Reloadable(Protocol):
    async def refresh(self, pool: AsyncConnectionPool, timeout: float) -> None: ...

    def __len__(self) -> int: ...


async def reload_loop(name: str, copy: Reloadable, pool: AsyncConnectionPool, interval: float = RELOAD_SECONDS) -> None:
    """Reload `copy` every `interval` seconds for the life of the process; failures keep the last one."""
    outage = OutageLog(log, f"{name} reload failed", f"{name} reloaded")
    while True:
        try:
            await copy.refresh(pool, timeout=interval)
            outage.succeeded(rows=len(copy))
        except Exception as exc:  # the database may be down or the pool busy: keep the last copy
            outage.failed(exc)
        await asyncio.sleep(interval)
