"""The write path's SQL. Every statement is set-based: one per batch, never one per event."""

# One statement stores a batch and keeps the counts true:
# - The batch arrives as one JSON array of rows (keys named after the columns) and
#   jsonb_to_recordset unpacks it in C: one plan and one parameter whatever the batch size, and
#   the server encodes each event once instead of dumping eleven arrays element by element
#   (client CPU to send a 100-event batch: 1.0 -> 0.4 ms, same database time).
# - ON CONFLICT DO NOTHING RETURNING yields exactly the rows this statement inserted, so the
#   counts are derived from new events only and a duplicate never inflates them.
# - A concurrent insert of the same messageId waits for the other transaction and is then
#   skipped: exactly once, with no SELECT-then-INSERT race. Rows arrive sorted by messageId
#   (the service sorts them), so two batches sharing ids take their locks in the same order.
# - The increments are appended to event_count_deltas, never updated in place: no two ingest
#   statements wait on each other for a counter row (see FOLD_COUNTS).
# - As a single statement it is its own transaction: the counts commit with the events or not at all.
INSERT_EVENTS = """
WITH inserted AS (
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
), counted AS (
    INSERT INTO event_count_deltas (project_id, bucket, event, n)
    SELECT %(project)s, date_trunc('hour', ts, 'UTC'), event, count(*)
    FROM inserted
    GROUP BY 2, 3
)
SELECT count(*) FROM inserted
"""

# Moves every committed delta into the hourly and daily rollups, atomically: a reader's snapshot
# sees each increment either still in the deltas or already in the rollups, never both or
# neither. Deltas of transactions still in flight are not visible here and wait for the next
# fold. Only the holder of FOLD_LOCK folds, so the rollup rows have a single writer and the
# upserts, grouped and ordered by key, never wait on ingest.
# At most %(limit)s rows a fold, so one fold always fits in the statement timeout and a backlog
# (after an outage) drains in bounded steps instead of being rolled back every round.
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

# One folder at a time across every worker and process; the others skip their turn.
TRY_FOLD_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('tally.fold_counts', 0))"

# Serialises requests that share an Idempotency-Key without blocking: the loser of the race is
# answered 409 at once. The lock is released when the transaction ends, even if the process dies.
TRY_LOCK_IDEMPOTENCY_KEY = "SELECT pg_try_advisory_xact_lock(hashtextextended(%(key)s, hashtextextended(%(project)s, 0)))"

# Only keys younger than the retention count; an older row is overwritten by UPSERT_RESPONSE.
STORED_RESPONSE = """
SELECT fingerprint, status, body FROM idempotency_keys
WHERE project_id = %(project)s AND key = %(key)s AND created_at > now() - make_interval(secs => %(ttl)s)
"""

UPSERT_RESPONSE = """
INSERT INTO idempotency_keys (project_id, key, fingerprint, status, body, created_at)
VALUES (%(project)s, %(key)s, %(fingerprint)s, %(status)s, %(body)s, now())
ON CONFLICT (project_id, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, body = EXCLUDED.body, created_at = now()
"""

PURGE_EXPIRED_KEYS = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %(ttl)s)"
