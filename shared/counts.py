"""Exact counts: how ingest's increments reach the hourly and daily rollups.

The invariant: every increment of a stored event is either still in `event_count_deltas` or
already in `event_counts_hourly` and `event_counts_daily`, never in both, never in neither. So
a reader that adds the deltas to the rollups in one snapshot counts every stored event exactly
once, as soon as its batch is acknowledged.

Three parts keep it:
- ingest appends the increments of exactly the rows it inserted (`APPEND_DELTAS`, a clause of
  the insert statement, so they commit with the events or not at all);
- the folder (`fold_loop`) moves committed deltas into the rollups, a project at a time,
  taking them out (`TAKE_DELTAS`) and adding them (`ADD_HOURLY`, `ADD_DAILY`) in one
  transaction, one folder at a time (`TRY_FOLD_LOCK`);
- readers (query/sql.py) add the deltas not folded yet to the rollups they read.
"""

from __future__ import annotations

import asyncio
import logging
from psycopg import AsyncConnection
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

# The increments of exactly the rows an insert inserted (`inserted`: its ON CONFLICT DO NOTHING
# RETURNING event, ts), so a duplicate never inflates a count. Appended, never updated in
# place: no two ingest statements wait on each other for a counter row.
def _deltas_of(source: str, n: str) -> str:
    return f"""INSERT INTO event_count_deltas (project_id, bucket, event, n)
    SELECT %(project)s, date_trunc('hour', ts, 'UTC'), event, {n}
    FROM {source}
    GROUP BY 2, 3"""


# As a CTE that follows the insert's `inserted`, so they commit with the events in one statement.
APPEND_DELTAS = f"counted AS ({_deltas_of('inserted', 'count(*)')})"

_RETURNED = "unnest(%(events)s::text[], %(ts)s::timestamptz[]) AS r(event, ts)"

# As a statement of its own, from the (event, ts) pairs the insert returned, for the Citus form
# of the write (two statements in one transaction: ingest/sql.py).
APPEND_COUNTS = _deltas_of(_RETURNED, "count(*)")

# The decrements of removed events (retention, erasure: lifecycle/sql.py), from the (event, ts)
# pairs their DELETE returned, in its transaction. The fold adds them like any delta and drops
# the rollup rows they bring to zero.
SUBTRACT_COUNTS = _deltas_of(_RETURNED, "-count(*)")

# The projects with deltas waiting: one index-only pass over (project_id, bucket).
PROJECTS_WITH_DELTAS = "SELECT DISTINCT project_id FROM event_count_deltas"

# A round's bound for one project without a row address (Citus has none to give): the hour at
# which its `limit`-th oldest delta lies. Rows before it are at most `limit`.
OLDEST_DELTA = "SELECT min(bucket) FROM event_count_deltas WHERE project_id = %(project)s"

FOLD_BOUND = """
SELECT bucket FROM event_count_deltas WHERE project_id = %(project)s ORDER BY bucket OFFSET %(limit)s LIMIT 1
"""

# Takes one project's deltas before `bound` (all of them when there is no bound; the oldest
# hour's when the bound is that hour) out of the deltas, summed by hour and event. Its caller
# adds the sums to both rollups in the same transaction, so a reader's snapshot sees each
# increment either still in the deltas or already in the rollups, never both or neither. Only
# the holder of the fold lock runs it, so the rollup rows have a single writer.
TAKE_DELTAS = """
WITH moved AS (
    DELETE FROM event_count_deltas
    WHERE project_id = %(project)s
      AND (%(bound)s::timestamptz IS NULL OR bucket < %(bound)s OR bucket = %(oldest)s)
    RETURNING bucket, event, n
)
SELECT bucket, event, sum(n)::bigint, count(*) FROM moved GROUP BY 1, 2 ORDER BY 1, 2
"""

ADD_HOURLY = """
INSERT INTO event_counts_hourly AS c (project_id, bucket, event, n)
SELECT %(project)s, b, e, n FROM unnest(%(buckets)s::timestamptz[], %(events)s::text[], %(counts)s::bigint[]) AS d(b, e, n)
ON CONFLICT (project_id, bucket, event) DO UPDATE SET n = c.n + EXCLUDED.n
"""

ADD_DAILY = """
INSERT INTO event_counts_daily AS d (project_id, day, event, n)
SELECT %(project)s, date_trunc('day', b, 'UTC'), e, sum(n)
FROM unnest(%(buckets)s::timestamptz[], %(events)s::text[], %(counts)s::bigint[]) AS x(b, e, n)
GROUP BY 2, 3
ORDER BY 2, 3
ON CONFLICT (project_id, day, event) DO UPDATE SET n = d.n + EXCLUDED.n
"""

# Rows that decrements brought to zero: a bucket without events has no row.
DROP_EMPTY_HOURLY = """
DELETE FROM event_counts_hourly WHERE project_id = %(project)s AND bucket = ANY(%(buckets)s::timestamptz[]) AND n = 0
"""

DROP_EMPTY_DAILY = """
DELETE FROM event_counts_daily
WHERE project_id = %(project)s AND n = 0
  AND day = ANY(ARRAY(SELECT date_trunc('day', b, 'UTC') FROM unnest(%(buckets)s::timestamptz[]) AS b))
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
    """Move up to about `limit` committed deltas into the rollups, a project at a time, in one
    transaction; how many, or None when another folder holds the turn."""
    moved = 0
    async with pool.connection() as conn, conn.transaction():
        if not (await (await conn.execute(TRY_FOLD_LOCK)).fetchone())[0]:
            return None
        projects = [project for (project,) in await (await conn.execute(PROJECTS_WITH_DELTAS)).fetchall()]
        for project in projects:
            if moved >= limit:
                break
            moved += await _fold_project(conn, project, limit - moved)
    return moved


async def _fold_project(conn: AsyncConnection, project: str, limit: int) -> int:
    found = await (await conn.execute(FOLD_BOUND, {"project": project, "limit": limit})).fetchone()
    bound = found[0] if found else None
    oldest = None
    if bound is not None:
        # Past the bound every row is newer; when the oldest hour alone holds `limit` rows the
        # bound is that hour, and that hour is taken whole so that the round makes progress.
        oldest = (await (await conn.execute(OLDEST_DELTA, {"project": project})).fetchone())[0]
        oldest = oldest if oldest == bound else None
    sums = await (await conn.execute(TAKE_DELTAS, {"project": project, "bound": bound, "oldest": oldest})).fetchall()
    for statement, params in _adding(project, sums):
        await conn.execute(statement, params)
    return sum(r[3] for r in sums)


def _adding(project: str, sums: list) -> list[tuple[str, dict]]:
    """The statements that add one project's taken sums to both rollups."""
    if not sums:
        return []
    arrays = {"project": project, "buckets": [r[0] for r in sums], "events": [r[1] for r in sums],
              "counts": [r[2] for r in sums]}
    statements = [(ADD_HOURLY, arrays), (ADD_DAILY, arrays)]
    if any(r[2] < 0 for r in sums):
        negative = {"project": project, "buckets": [r[0] for r in sums if r[2] < 0]}
        statements += [(DROP_EMPTY_HOURLY, negative), (DROP_EMPTY_DAILY, negative)]
    return statements


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


def fold_everything(conn) -> None:
    """Fold every committed delta now, on a synchronous psycopg connection, waiting for a fold
    already running (tests that read the rollups directly call this first)."""
    with conn.transaction():
        conn.execute(FOLD_LOCK)
        for (project,) in conn.execute(PROJECTS_WITH_DELTAS).fetchall():
            sums = conn.execute(TAKE_DELTAS, {"project": project, "bound": None, "oldest": None}).fetchall()
            for statement, params in _adding(project, sums):
                conn.execute(statement, params)
