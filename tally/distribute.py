"""Past one database: the tables distributed on a Citus coordinator (docs/scaling.md).

Every project table is distributed by `project_id` and co-located with `events`, so that every
statement of a request stays on its project's shard. `revoked_tokens` is a reference table
(every worker reads all of it each second), and so is `event_schemas`: every worker loads the
whole tracking plan each second, and it is small, so a copy on every node beats a fan-out to
every shard. Idempotent: a table already distributed is left as it is.
"""

from __future__ import annotations

import psycopg

DISTRIBUTED = (
    "events", "event_counts_hourly", "event_counts_daily", "event_count_deltas", "idempotency_keys", "erasures",
)
REFERENCE = ("revoked_tokens", "event_schemas", "projects", "suppressions")

HAS_CITUS = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
ALREADY = "SELECT logicalrelid::text FROM pg_dist_partition"


class NotCitus(RuntimeError):
    """The database has no citus extension: nothing to distribute."""


def is_citus(conn: psycopg.Connection) -> bool:
    return bool(conn.execute(HAS_CITUS).fetchone()[0])


def distribute(database_url: str) -> list[str]:
    """Distribute what is not yet; returns the tables it distributed. NotCitus without Citus."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not is_citus(conn):
            raise NotCitus("the database has no citus extension (CREATE EXTENSION citus on a coordinator): nothing done")
        done = {name for (name,) in conn.execute(ALREADY).fetchall()}
        changed = []
        for table in DISTRIBUTED:
            if table not in done:
                colocate = "none" if table == "events" else "events"
                conn.execute("SELECT create_distributed_table(%s, 'project_id', colocate_with => %s)", [table, colocate])
                changed.append(table)
        for table in REFERENCE:
            if table not in done:
                conn.execute("SELECT create_reference_table(%s)", [table])
                changed.append(table)
        return changed
