"""How much ingest work one process takes on at once: bodies held, and statements running.

Both limits answer 503 + Retry-After rather than letting a queue grow without bound; SDKs
retry such answers with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from shared.errors import Overloaded


class Admission:
    """At most `limit` ingest requests per process hold a body at once.

    A request holds its body (up to TALLY_MAX_BODY_BYTES) and then its parsed events while it
    waits for a pooled connection; without a cap, a burst of large batches against a busy
    database grows memory with the number of connections. Past the cap a request is answered
    503 + Retry-After before its body is read, so memory stays bounded by
    limit x (body + parsed batch).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.in_progress = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.in_progress >= self.limit:
            raise Overloaded(f"{self.limit} ingest requests are in progress in this process")
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1


class StatementSlots:
    """At most `limit` ingest statements per process run at once; the others wait their turn.

    On a small machine Postgres and the workers share the CPU: with many statements per worker
    in flight, the backends time-slice the cores, the workers' event loops get less of them, and
    every request waits behind all the others. Holding each worker to a few statements, the
    rest queue in order in the process and Postgres runs what it can run at full speed: the same
    throughput with a shorter tail (measured in docs/ingest.md). The pool stays larger, so
    queries, the count folder and the plan reload never wait behind ingest. A request that
    cannot start within the pool timeout is answered 503, as one that cannot get a connection is.
    """

    def __init__(self, limit: int, timeout: float):
        self.limit = limit
        self.timeout = timeout
        self._slots = asyncio.Semaphore(limit)  # FIFO: waiters are woken in arrival order

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded(f"{self.limit} ingest statements have been running for {self.timeout} s") from None
        try:
            yield
        finally:
            self._slots.release()
