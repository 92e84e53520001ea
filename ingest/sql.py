"""The write path's SQL. Every statement is set-based: one per batch, never one per event."""

from shared.counts import APPEND_DELTAS

# How a batch is stored so that the counts stay true:
# - The batch arrives as one JSON array of rows (keys named after the columns) and
#   jsonb_to_recordset unpacks it in C: one plan and one parameter whatever the batch size, and
#   the server encodes each event once instead of dumping an array per column.
# - ON CONFLICT DO NOTHING RETURNING yields exactly the rows this statement inserted, so the
#   counts are derived from new events only and a duplicate never inflates them.
# - A concurrent insert of the same messageId waits for the other transaction and is then
#   skipped: exactly once, with no SELECT-then-INSERT race. Rows arrive sorted by messageId
#   (the service sorts them), so two batches sharing ids take their locks in the same order.
STORE_EVENTS = """
INSERT INTO events (
    project_id, message_id, type, event, user_id, anonymous_id, ts,
    original_timestamp, sent_at, received_at, properties, context, traits, extra, violations
)
SELECT %(project)s, e.message_id, e.type, e.event, e.user_id, e.anonymous_id, e.ts,
       e.original_timestamp, %(sent_at)s, %(received_at)s, e.properties, e.context, e.traits, e.extra,
       e.violations
FROM jsonb_to_recordset(%(rows)s::jsonb) AS e(
    message_id text, type text, event text, user_id text, anonymous_id text, ts timestamptz,
    original_timestamp timestamptz, properties jsonb, context jsonb, traits jsonb, extra jsonb,
    violations jsonb)
ON CONFLICT (project_id, message_id) DO NOTHING
RETURNING event, ts
"""

# On one Postgres, the insert and the increments of the rows it inserted (shared/counts.py) are
# one statement, and so their own transaction: the counts commit with the events or not at all.
# It writes two project tables, the one exception to the Citus rule (docs/scaling.md): as two
# statements it cost 15 to 20% of ingest throughput on one Postgres. On Citus
# (TALLY_CITUS=true) the service runs STORE_EVENTS then APPEND_COUNTS in one transaction
# instead, which Citus routes to the project's shard alone.
INSERT_EVENTS = f"""
WITH inserted AS ({STORE_EVENTS}), {APPEND_DELTAS}
SELECT count(*) FROM inserted
"""

# The tracking plan a worker holds (ingest/plan.py), in one statement, one snapshot: the listing
# and the bodies it needs always agree, so an update committed between two queries can never
# leave an event name briefly without its schema. Bodies only for revisions not compiled yet.
LOAD_PLAN = """
SELECT project_id, event, mode, revision,
       CASE WHEN revision = ANY(%(compiled)s::bigint[]) THEN NULL ELSE schema END
FROM event_schemas
"""
