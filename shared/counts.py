"""Exact counts: how ingest's increments reach the hourly and daily rollups.

The invariant: every increment of a stored event is either still in `event_count_deltas` or
already in `event_counts_hourly` and `event_counts_daily`, never in both, never in neither. So
a reader that adds the deltas to the rollups in one snapshot counts every stored event exactly
once, as soon as its batch is acknowledged.

Three parts keep it:
- ingest appends the increments of exactly the rows it inserted (`APPEND_DELTAS`, a clause of
  the insert statement, so they commit with the events or not at all);
- the folder (`fold_loop`) moves committed deltas into the rollups, deleting and adding in one
  statement (`FOLD_COUNTS`), one folder at a time (`TRY_FOLD_LOCK`);
- readers (query/sql.py) add the deltas not folded yet to the rollups they read.
"""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

from shared.metrics import Metrics
from shared.outage import OutageLog

log = logging.getLogger("tally.counts")

# How often the deltas are folded; readers add what is not folded yet, so this bounds the
# deltas' size, not the freshness of counts. Several small folds a second rather than one big
# one, which ingest statements would feel as a burst in their tail (docs/ingest.md).
FOLD_INTERVAL_SECONDS = 0.2
# Rows one fold statement moves at most: one fold always fits in the statement timeout, and a
# backlog (after an outage) drains in bounded steps instead of being rolled back every round.
FOLD_LIMIT = 50_000

# The insert statement's CTE `inserted` returns (event, ts) of exactly the rows it inserted
# (ON CONFLICT DO NOTHING RETURNING), so a duplicate never inflates a count. Increments are
# appended, never updated in place: no two ingest statements wait on each other for a counter
# row. Written as a CTE that follows `inserted`.
APPEND_DELTAS = """counted AS (
    INSERT INTO event_count_deltas (project_id, bucket, event, n)
    SELECT %(project)s, date_trunc('hour', ts, 'UTC'), event, count(*)
    FROM inserted
    GROUP BY 2, 3
)"""

# Moves committed deltas into both rollups atomically: a reader's snapshot sees each increment
# either still in the deltas or already in the rollups. Deltas of transactions still in flight
# are not visible here and wait for the next fold. Only the holder of the fold lock runs it, so
# the rollup rows have a single writer, and the upserts, grouped and ordered by key, never wait
# on ingest.
FOLD_COUNTS = """
WITH moved AS (
    DELETE FROM event_count_deltas
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM event_count_deltas LIMIT %(limit)s))
    RETURNING project_id, bucket, event, n
), hourly AS (
    INSERT INTO event_counts_hourly AS c (project_id, bucket, event, n)
    SELECT project_id, bucket, event, sum(n) FROM moved
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (project_id, bucket, event) DO UPDATE SET n = c.n + EXCLUDED.n
), daily AS (
    INSERT INTO event_counts_daily AS d (project_id, day, event, n)
    SELECT project_id, date_trunc('day', bucket, 'UTC'), event, sum(n) FROM moved
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (project_id, day, event) DO UPDATE SET n = d.n + EXCLUDED.n
)
SELECT count(*) FROM moved
"""

# One folder at a time across every worker and process: the others skip their turn
# (TRY_FOLD_LOCK); a caller that must fold now, such as a test, waits for it (FOLD_LOCK).
_FOLD_LOCK_KEY = "hashtextextended('tally.fold_counts', 0)"
TRY_FOLD_LOCK = f"SELECT pg_try_advisory_xact_lock({_FOLD_LOCK_KEY})"
FOLD_LOCK = f"SELECT pg_advisory_xact_lock({_FOLD_LOCK_KEY})"


class FoldMetrics:
    def __init__(self, metrics: Metrics):
        self.folded = metrics.counter(
            "tally_count_deltas_folded_total", "Count delta rows folded into the hourly and daily rollups.", []
        )
        self.failures = metrics.counter(
            "tally_count_fold_failures_total", "Folds of count deltas that failed (the deltas wait).", []
        )


async def fold_counts(pool: AsyncConnectionPool, limit: int = FOLD_LIMIT) -> int | None:
    """Move up to `limit` committed deltas into the rollups; how many, or None when another
    folder holds the turn."""
    async with pool.connection() as conn, conn.transaction():
        if not (await (await conn.execute(TRY_FOLD_LOCK)).fetchone())[0]:
            return None
        return (await (await conn.execute(FOLD_COUNTS, {"limit": limit})).fetchone())[0]


async def fold_loop(pool: AsyncConnectionPool, metrics: FoldMetrics) -> None:
    """Every worker tries every FOLD_INTERVAL_SECONDS; the lock lets one fold at a time. A full
    fold is followed at once by another, so a backlog drains at FOLD_LIMIT rows per statement.
    A run of failures is logged once, and the recovery once."""
    outage = OutageLog(log, "count fold failed", "count fold works again")
    while True:
        await asyncio.sleep(FOLD_INTERVAL_SECONDS)
        try:
            while (moved := await fold_counts(pool)) is not None:
                metrics.folded.inc(moved)
                if moved < FOLD_LIMIT:
                    break
            outage.succeeded()
        except Exception as exc:  # the database may be down; deltas wait, counts stay exact
            metrics.failures.inc()
            outage.failed(exc)
