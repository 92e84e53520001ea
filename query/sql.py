"""The read path's SQL. Every statement is a keyset page: `LIMIT n+1` after a row comparison, no OFFSET.

Optional filters are spliced in as fixed fragments (never values) rather than written as
`(%(x)s IS NULL OR ...)`: that form hides the condition from the index once psycopg prepares the
statement and Postgres switches to a generic plan.
"""

from __future__ import annotations

from functools import cache

from psycopg.sql import SQL, Composable, Identifier

# Counts for a window of consecutive buckets, each given by the service as
#   label: what the row shows; [lo, hi): the instants it covers (clipped to the query range);
#   [dlo, dhi): the whole UTC days inside it, from event_counts_daily;
#   [flo, dlo) and [dhi, fhi): the other whole UTC hours, from event_counts_hourly;
#   plus, over all of [flo, fhi), the increments not yet folded into either (event_count_deltas);
#   [lo, flo) and [fhi, hi): remainders under an hour, from raw events.
# Remainders exist only when a bucket edge is not a whole UTC hour (a `from` like 10:30, a day
# in Asia/Kolkata); they are counted exactly through ix_events_project_ts. The LATERAL makes
# that a scan per bucket bounded by its two remainders (a join lets the planner read the whole
# project and filter), and it counts `message_id` rather than `*` on purpose: with only
# (event, ts) needed the planner prefers an index-only scan of ix_events_project_event_ts,
# which is not led by ts and would walk the project's whole index. Aligned buckets have empty
# remainders, so counts never scan raw events. Each rollup read is a range scan of its
# primary key (project_id, bucket|day, event): a 30-day total reads 30 rows per event name.
_COUNTS = SQL("""
WITH b AS (
    SELECT * FROM unnest(
        %(label)s::timestamptz[], %(lo)s::timestamptz[], %(hi)s::timestamptz[],
        %(flo)s::timestamptz[], %(fhi)s::timestamptz[], %(dlo)s::timestamptz[], %(dhi)s::timestamptz[]
    ) AS b(label, lo, hi, flo, fhi, dlo, dhi)
), parts AS (
    SELECT b.label, b.lo, b.hi, d.event, d.n
    FROM b JOIN event_counts_daily d
      ON d.project_id = %(project)s AND d.day >= b.dlo AND d.day < b.dhi
    WHERE TRUE {daily_filters}
    UNION ALL
    SELECT b.label, b.lo, b.hi, c.event, c.n
    FROM b JOIN event_counts_hourly c
      ON c.project_id = %(project)s AND c.bucket >= b.flo AND c.bucket < b.dlo
    WHERE TRUE {hourly_filters}
    UNION ALL
    SELECT b.label, b.lo, b.hi, c.event, c.n
    FROM b JOIN event_counts_hourly c
      ON c.project_id = %(project)s AND c.bucket >= b.dhi AND c.bucket < b.fhi
    WHERE TRUE {hourly_filters}
    UNION ALL
    -- Increments not folded into the rollups yet (a second's worth): every whole hour counts.
    SELECT b.label, b.lo, b.hi, x.event, x.n
    FROM b JOIN event_count_deltas x
      ON x.project_id = %(project)s AND x.bucket >= b.flo AND x.bucket < b.fhi
    WHERE TRUE {delta_filters}
    UNION ALL
    SELECT b.label, b.lo, b.hi, r.event, r.n
    FROM b, LATERAL (
        SELECT e.event, count(e.message_id) AS n FROM events e
        WHERE e.project_id = %(project)s
          AND ((e.ts >= b.lo AND e.ts < b.flo) OR (e.ts >= b.fhi AND e.ts < b.hi)) {raw_filters}
        GROUP BY e.event
    ) AS r
)
SELECT label, event, sum(n)::bigint AS n, lo, hi
FROM parts
GROUP BY label, lo, hi, event
-- Removed events leave decrements until the fold: a bucket they emptied has no row.
HAVING sum(n) <> 0
ORDER BY label, event
LIMIT %(limit)s
""")

# Exact distinct users of each row of a counts page, computed only for the page's rows: an
# index-only scan of ix_events_project_event_ts (project_id, event, ts) INCLUDE (user_id,
# anonymous_id) over [lo, hi) per row. Its cost is the number of events the page covers.
_UNIQUE_USERS = SQL("""
SELECT p.label, p.event, p.n, (
    SELECT count(DISTINCT coalesce(e.user_id, e.anonymous_id))
    FROM events e
    WHERE e.project_id = %(project)s AND e.event = p.event AND e.ts >= p.lo AND e.ts < p.hi
) AS users
FROM ({counts}) AS p
ORDER BY p.label, p.event
""")


@cache
def counts_window(*, events: bool, after: bool, unique_users: bool) -> Composable:
    """The statement for one window of buckets; `after` resumes past the cursor's (label, event)."""

    def filters(alias: str) -> Composable:
        table = Identifier(alias)
        parts = []
        if events:
            parts.append(SQL(" AND {}.event = ANY(%(events)s::text[])").format(table))
        if after:
            parts.append(SQL(
                " AND (b.label, {}.event) > (%(after_label)s::timestamptz, %(after_event)s::text)"
            ).format(table))
        return SQL("").join(parts)

    counts = _COUNTS.format(
        daily_filters=filters("d"), hourly_filters=filters("c"), delta_filters=filters("x"), raw_filters=filters("e"),
    )
    return _UNIQUE_USERS.format(counts=counts) if unique_users else counts


# The first hour at or after %(at)s with any event: one descent of the primary key, and one of
# the deltas' index for hours whose first events are not folded yet.
NEXT_HOUR_WITH_EVENTS = """
SELECT min(bucket) FROM (
    (SELECT bucket FROM event_counts_hourly
     WHERE project_id = %(project)s AND bucket >= %(at)s ORDER BY bucket LIMIT 1)
    UNION ALL
    (SELECT bucket FROM event_count_deltas
     WHERE project_id = %(project)s AND bucket >= %(at)s ORDER BY bucket LIMIT 1)
) AS first_hours
"""

EVENT_COLUMNS = SQL("""
message_id, type, event, user_id, anonymous_id, ts, original_timestamp, sent_at, received_at,
properties::text AS properties, context::text AS context, traits::text AS traits, extra::text AS extra,
violations::text AS violations
""")

# Newest first, keyset on (ts, message_id), the order of ix_events_project_ts. Filtered by one
# event name, ix_events_project_event_ts is read backwards (ties on ts sorted incrementally);
# by user, a BitmapOr of the user_id and anonymous_id indexes; flagged events only, the partial
# ix_events_project_violations_ts. `ts <= after_ts` repeats the row comparison's leading column
# so every index can use it as a bound.
_LIST_EVENTS = SQL("""
SELECT {columns}
FROM events
WHERE project_id = %(project)s {filters}
ORDER BY ts DESC, message_id DESC
LIMIT %(limit)s
""")

# Each optional filter of the listing, spliced in when its parameter is given.
_EVENT_FILTERS = {
    "violations": SQL(" AND violations IS NOT NULL"),
    "no_violations": SQL(" AND violations IS NULL"),
    "events": SQL(" AND event = ANY(%(events)s::text[])"),
    "user": SQL(" AND (user_id = %(user)s OR anonymous_id = %(user)s)"),
    "type": SQL(" AND type = %(type)s"),
    "start": SQL(" AND ts >= %(start)s"),
    "end": SQL(" AND ts < %(end)s"),
    "after": SQL(" AND ts <= %(after_ts)s AND (ts, message_id) < (%(after_ts)s::timestamptz, %(after_id)s::text)"),
}


@cache
def list_events(filters: frozenset[str]) -> Composable:
    """The listing with the named filters of _EVENT_FILTERS, in a fixed order."""
    unknown = filters - _EVENT_FILTERS.keys()
    assert not unknown, unknown
    return _LIST_EVENTS.format(
        columns=EVENT_COLUMNS, filters=SQL("").join(f for name, f in _EVENT_FILTERS.items() if name in filters),
    )


# One event by its id, within the caller's project only: another project's id is simply absent.
GET_EVENT = SQL("SELECT {} FROM events WHERE project_id = %(project)s AND message_id = %(message_id)s").format(
    EVENT_COLUMNS
)
