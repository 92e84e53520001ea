"""The connection pool: one bounded psycopg pool per process, opened in the app's lifespan.

The hot paths use psycopg directly (binary parameters, no ORM, no per-row statements); the
schema itself is defined once in `shared.tables` with SQLAlchemy Core for alembic.
Session limits are set in the connection string, so they cost no extra round trip:
a statement that runs too long is cancelled (503), a lock wait is bounded, and a transaction
left idle by a stalled request cannot hold locks for long.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from shared.settings import Settings


def session_options(settings: Settings) -> str:
    return (
        f"-c statement_timeout={settings.db_statement_timeout_ms} "
        f"-c lock_timeout={max(settings.db_statement_timeout_ms // 2, 100)} "
        f"-c idle_in_transaction_session_timeout={settings.db_statement_timeout_ms * 2} "
        "-c timezone=UTC"
    )


def create_pool(settings: Settings) -> AsyncConnectionPool:
    assert settings.database_url is not None
    return AsyncConnectionPool(
        settings.database_url,
        min_size=min(2, settings.db_pool_size),
        max_size=settings.db_pool_size,
        timeout=settings.db_pool_timeout,
        # Bound the queue too: past this many waiters a request fails at once instead of piling up.
        max_waiting=settings.db_pool_size * 50,
        # After a database restart, stale connections are found and replaced before use; a
        # connection returned moments ago is trusted, so a busy pool pays no extra round trip.
        check=_check_if_idle,
        reset=_mark_returned,
        # Autocommit: a lone statement is its own transaction (one round trip, durable when it
        # returns); multi-statement work opens `conn.transaction()` explicitly.
        kwargs={
            "autocommit": True,
            "options": session_options(settings),
            "application_name": "tally",
            "connect_timeout": 5,
        },
        open=False,
    )


# A connection back in the pool for less than this is handed out without a check.
TRUST_RECENT_SECONDS = 1.0


async def _mark_returned(conn: AsyncConnection) -> None:
    conn._tally_returned = time.monotonic()  # type: ignore[attr-defined]


async def _check_if_idle(conn: AsyncConnection) -> None:
    returned = getattr(conn, "_tally_returned", None)
    if returned is None or time.monotonic() - returned > TRUST_RECENT_SECONDS:
        await AsyncConnectionPool.check_connection(conn)


async def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


Pool = Annotated[AsyncConnectionPool[AsyncConnection], Depends(get_pool)]
