"""The statements of the schema resource: each write is one statement, so it is atomic by itself.

Every statement names the project: a schema is addressed by (project_id, event), the primary
key, and no request can reach another project's rows. `schema::text` is returned as jsonb
prints it and spliced into the response as is: re-parsing it would turn a stored 1e300 into a
300-digit integer that the JSON encoder cannot write.
"""

from __future__ import annotations

COLUMNS = "event, schema::text, mode, description, version, etag, created_at, updated_at, updated_by"

# ON CONFLICT DO NOTHING, not a SELECT first: two concurrent creates of one name cannot both
# pass a check; the loser gets no row back and is told 409.
CREATE_SCHEMA = f"""
INSERT INTO event_schemas (project_id, event, schema, mode, description, version, etag, updated_by)
VALUES (%(project)s, %(event)s, %(schema)s::jsonb, %(mode)s, %(description)s, 1, %(etag)s, %(sub)s)
ON CONFLICT (project_id, event) DO NOTHING
RETURNING {COLUMNS}
"""

GET_SCHEMA = f"""
SELECT {COLUMNS}
FROM event_schemas
WHERE project_id = %(project)s AND event = %(event)s
"""

# Keyset pages in byte order of the name (the column is COLLATE "C", 0007), so both the bound
# and the order are read from pk_event_schemas: a page costs its own rows at any depth.
# Two statements rather than `(%(after)s IS NULL OR event > %(after)s)`: a generic plan of
# that form could not use the bound as an index condition.
LIST_SCHEMAS = f"""
SELECT {COLUMNS}
FROM event_schemas
WHERE project_id = %(project)s
ORDER BY event
LIMIT %(limit)s
"""

LIST_SCHEMAS_AFTER = f"""
SELECT {COLUMNS}
FROM event_schemas
WHERE project_id = %(project)s AND event > %(after)s
ORDER BY event
LIMIT %(limit)s
"""

# The If-Match check and the write are one statement: between a read of the ETag and the
# write, another writer could slip in. %(etags)s is NULL for an unconditional request (or
# `If-Match: *`), else the strong ETags sent (possibly none). Every write gets a new revision
# (the workers' cache key) and a new random ETag.
# No row back means "no such schema" or "precondition failed"; the caller knows which by
# whether it sent If-Match. The revision and the time are taken first (NEXT_REVISION) and
# passed in: no function in the SET (Citus refuses volatile ones there: docs/scaling.md).
NEXT_REVISION = "SELECT nextval('event_schemas_revision_seq'), now()"

REPLACE_SCHEMA = f"""
UPDATE event_schemas
SET schema = %(schema)s::jsonb, mode = %(mode)s, description = %(description)s,
    version = version + 1, revision = %(revision)s, etag = %(etag)s,
    updated_at = %(now)s, updated_by = %(sub)s
WHERE project_id = %(project)s AND event = %(event)s
  AND (%(etags)s::text[] IS NULL OR etag = ANY(%(etags)s::text[]))
RETURNING {COLUMNS}
"""

DELETE_SCHEMA = """
DELETE FROM event_schemas
WHERE project_id = %(project)s AND event = %(event)s
  AND (%(etags)s::text[] IS NULL OR etag = ANY(%(etags)s::text[]))
RETURNING etag
"""
