"""The lifecycle's SQL: settings, erasure jobs, suppressions, and the bounded removals.

Removal is one mechanism for retention and erasure alike: a bounded batch of events deleted
`RETURNING event, ts`, then the decrements of exactly those rows appended to the count deltas
(shared/counts.py: SUBTRACT_COUNTS), both in one transaction. So every count keeps equalling
the stored events, and a batch holds its row locks only for its own few thousand rows.
"""

# A JSON merge patch (RFC 7396) applied in the statement: keys of the patch replace the
# project's own, and the answer is what is stored. The time is a parameter (Citus: no volatile
# function in DO UPDATE SET).
PATCH_SETTINGS = """
INSERT INTO projects AS p (project_id, settings, updated_at, updated_by)
VALUES (%(project)s, %(settings)s, %(now)s, %(by)s)
ON CONFLICT (project_id) DO UPDATE
SET settings = p.settings || EXCLUDED.settings, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
RETURNING settings, updated_at, updated_by
"""

GET_SETTINGS = "SELECT settings, updated_at, updated_by FROM projects WHERE project_id = %(project)s"

# --- removal ----------------------------------------------------------------------------------

# The oldest events of a project, up to `limit`: a range scan of ix_events_project_ts, then
# the rows by primary key.
REMOVE_EXPIRED = """
DELETE FROM events
WHERE project_id = %(project)s AND message_id = ANY(ARRAY(
    SELECT message_id FROM events
    WHERE project_id = %(project)s AND ts < %(before)s
    LIMIT %(limit)s))
RETURNING event, ts
"""

# A person's events, up to `limit`: the BitmapOr of the two partial user indexes.
REMOVE_USERS = """
DELETE FROM events
WHERE project_id = %(project)s AND message_id = ANY(ARRAY(
    SELECT message_id FROM events
    WHERE project_id = %(project)s
      AND (user_id = ANY(%(users)s::text[]) OR anonymous_id = ANY(%(users)s::text[]))
    LIMIT %(limit)s))
RETURNING event, ts
"""

# With a default retention, the pass looks at every project with counts (the others are the
# ones that set a retention, which every worker holds already: shared/projects.py).
PROJECTS_WITH_EVENTS = "SELECT DISTINCT project_id FROM event_counts_daily"

# --- erasure jobs -----------------------------------------------------------------------------

CREATE_ERASURE = """
INSERT INTO erasures (project_id, id, users, suppress, status, requested_at, requested_by)
VALUES (%(project)s, %(id)s, %(users)s, %(suppress)s, 'pending', %(now)s, %(by)s)
RETURNING id, status, users, suppress, events_erased, requested_at, finished_at, requested_by, error
"""

# Idempotent: an id suppressed already keeps its first record.
SUPPRESS = """
INSERT INTO suppressions (project_id, user_id, erasure_id, created_at, created_by)
SELECT %(project)s, u, %(erasure)s, %(now)s, %(by)s FROM unnest(%(users)s::text[]) AS u
ON CONFLICT (project_id, user_id) DO NOTHING
"""

ERASURE_COLUMNS = "id, status, users, suppress, events_erased, requested_at, finished_at, requested_by, error"

GET_ERASURE = f"SELECT {ERASURE_COLUMNS} FROM erasures WHERE project_id = %(project)s AND id = %(id)s"

# Newest first, keyset on (requested_at, id): ix_erasures_project_id_requested_at.
LIST_ERASURES = f"""
SELECT {ERASURE_COLUMNS} FROM erasures
WHERE project_id = %(project)s
  AND (%(after_at)s::timestamptz IS NULL OR (requested_at, id) < (%(after_at)s::timestamptz, %(after_id)s::text))
ORDER BY requested_at DESC, id DESC
LIMIT %(limit)s
"""

# The runner's queue over every project (the partial index ix_erasures_unfinished).
UNFINISHED_ERASURES = """
SELECT project_id, id FROM erasures WHERE status IN ('pending', 'running') ORDER BY requested_at LIMIT 20
"""

# One step of a job takes its row's lock for the step's transaction; another runner skips it.
# The time comes with it, for the updates below (no now() in their SET).
TAKE_ERASURE = """
SELECT users, suppress, requested_at, now() FROM erasures
WHERE project_id = %(project)s AND id = %(id)s AND status IN ('pending', 'running')
FOR UPDATE SKIP LOCKED
"""

ERASURE_PROGRESS = """
UPDATE erasures SET status = 'running', events_erased = events_erased + %(n)s
WHERE project_id = %(project)s AND id = %(id)s
"""

FINISH_ERASURE = """
UPDATE erasures SET status = %(status)s, finished_at = %(now)s, error = %(error)s
WHERE project_id = %(project)s AND id = %(id)s
RETURNING events_erased, requested_by
"""

# --- suppressions -----------------------------------------------------------------------------

# Keyset on user_id, in byte order (the column is COLLATE "C"), straight from the primary key.
LIST_SUPPRESSIONS = """
SELECT user_id, erasure_id, created_at, created_by FROM suppressions
WHERE project_id = %(project)s AND (%(after)s::text IS NULL OR user_id > %(after)s)
ORDER BY user_id
LIMIT %(limit)s
"""

LIFT_SUPPRESSION = "DELETE FROM suppressions WHERE project_id = %(project)s AND user_id = %(user)s"
