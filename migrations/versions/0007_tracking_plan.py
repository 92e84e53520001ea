"""Tracking plan: event_schemas, and the violations a flagged event was stored with.

Event names are COLLATE "C": `GET /v1/schemas` pages by name in UTF-8 byte (code point) order
on every server whatever its locale, and both the keyset bound and the order come straight from
the primary key (an `ORDER BY event COLLATE "C"` over a default-collation key would sort the
project's rows on every page). Equality, which ingest looks names up by, is unchanged.

Adding a nullable column without a default is a catalog change only; the partial index holds
flagged events alone, so it is built CONCURRENTLY at no cost to ingest while it runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 14:10:00.000000
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE event_schemas_revision_seq")
    op.create_table(
        'event_schemas',
        sa.Column('project_id', sa.Text(), nullable=False),
        sa.Column('event', sa.Text(collation='C'), nullable=False),
        sa.Column('schema', postgresql.JSONB(), nullable=False),
        sa.Column('mode', sa.Text(), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('revision', sa.BigInteger(), nullable=False,
                  server_default=sa.text("nextval('event_schemas_revision_seq')")),
        sa.Column('etag', sa.Text(), nullable=False),
        sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), nullable=False, server_default=sa.text('now()')),
        sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), nullable=False, server_default=sa.text('now()')),
        sa.Column('updated_by', sa.Text(), nullable=True),
        sa.CheckConstraint("mode IN ('enforce', 'flag')", name=op.f('ck_event_schemas_mode')),
        sa.PrimaryKeyConstraint('project_id', 'event', name=op.f('pk_event_schemas')),
    )
    op.execute("ALTER SEQUENCE event_schemas_revision_seq OWNED BY event_schemas.revision")
    op.add_column('events', sa.Column('violations', postgresql.JSONB(), nullable=True))
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY ix_events_project_violations_ts "
            "ON events (project_id, ts DESC, message_id DESC) WHERE violations IS NOT NULL"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY ix_events_project_violations_ts")
    op.drop_column('events', 'violations')
    op.drop_table('event_schemas')  # drops the sequence it owns
