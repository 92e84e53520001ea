"""Tracking-plan event names in byte order: event_schemas.event COLLATE "C".

`GET /v1/schemas` pages through a project's schemas by event name. Under the database's default
collation the order depends on the server's locale (and may move with a libc upgrade), and an
`ORDER BY event COLLATE "C"` cannot read the primary key, which is in the default collation: a
sort of the project's rows on every page. With the column itself in "C", the order is UTF-8
byte order (code point order) on every server, and the keyset bound and the order both come
from pk_event_schemas. Equality is unchanged (deterministic collations compare bytes), so the
ingest lookups by name mean the same. Rebuilds only the primary key of a small table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 16:00:00.000000
"""
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('ALTER TABLE event_schemas ALTER COLUMN event TYPE text COLLATE "C"')


def downgrade() -> None:
    op.execute('ALTER TABLE event_schemas ALTER COLUMN event TYPE text COLLATE pg_catalog."default"')
