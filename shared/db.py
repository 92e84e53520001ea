"""The connection pool: one bounded psycopg pool per process, opened in the app's lifespan.

The hot paths use psycopg directly (text parameters, no ORM, no per-row statements); the
schema itself is defined once in `shared.tables` with SQLAlchemy Core for alembic.
Session limits are set in the connection string, so they cost no extra round trip:
a statement that runs too long is cancelled (503), a lock wait is bounded, and a transaction
left idle by a stalled request cannot hold locks for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

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


class BoundedPool(AsyncConnectionPool):
    """A pool whose every borrowing is bounded by a client-side deadline.

    statement_timeout and lock_timeout are enforced by the server; a server that stalls (a
    SIGSTOPped postmaster, a paused VM, a blackholed network) enforces nothing, and psycopg
    would wait on the socket for as long as it lasts. Cancelling the waiting task does not help:
    psycopg then spends up to 10 s trying to cancel the query on the same stalled server. So at
    the deadline the connection's socket is shut down instead: psycopg's wait fails at once with
    OperationalError (answered 503 + Retry-After), and the pool discards the broken connection.
    """

    def __init__(self, conninfo: str, *, deadline: float, **kwargs: Any):
        self.deadline = deadline
        super().__init__(conninfo, **kwargs)

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[AsyncConnection]:
        async with super().connection(timeout) as conn:
            timer = asyncio.get_running_loop().call_later(self.deadline, abort, conn)
            try:
                yield conn
            finally:
                timer.cancel()


def abort(conn: AsyncConnection) -> None:
    """Shut the connection's socket down so that any wait on it ends now, with an error."""
    with contextlib.suppress(OSError, ValueError):
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


def create_pool(settings: Settings) -> AsyncConnectionPool:
    assert settings.database_url is not None
    return BoundedPool(
        settings.database_url,
        # Waiting for a connection, then a statement, plus a second of slack for the round trips.
        deadline=settings.db_pool_timeout + settings.db_statement_timeout_ms / 1000 + 1.0,
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
# A liveness check (an empty query) answers in well under a millisecond when the server is up.
CHECK_DEADLINE_SECONDS = 1.0


# When each pooled connection was last given back, by connection. Weak keys: a connection the
# pool discards is forgotten with it.
_RETURNED: weakref.WeakKeyDictionary[AsyncConnection, float] = weakref.WeakKeyDictionary()


async def _mark_returned(conn: AsyncConnection) -> None:
    _RETURNED[conn] = time.monotonic()


async def _check_if_idle(conn: AsyncConnection) -> None:
    returned = _RETURNED.get(conn)
    if returned is None or time.monotonic() - returned > TRUST_RECENT_SECONDS:
        # Bounded like a borrowing: a stalled server must not hold the check either.
        timer = asyncio.get_running_loop().call_later(CHECK_DEADLINE_SECONDS, abort, conn)
        try:
            await AsyncConnectionPool.check_connection(conn)
        finally:
            timer.cancel()
