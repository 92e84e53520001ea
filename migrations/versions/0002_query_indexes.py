"""Query indexes: unique users and event listings by event name or by user.

Built CONCURRENTLY (outside the migration's transaction), so ingest keeps writing while a
large events table is indexed. An interrupted concurrent build leaves an INVALID index:
`DROP INDEX` it and run the migration again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:29:23.273158
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            'ix_events_project_event_ts', 'events', ['project_id', 'event', 'ts'], unique=False,
            postgresql_include=['user_id', 'anonymous_id'], postgresql_concurrently=True,
        )
        op.create_index(
            'ix_events_project_user_id_ts', 'events', ['project_id', 'user_id', 'ts'], unique=False,
            postgresql_concurrently=True,
        )
        op.create_index(
            'ix_events_project_anonymous_id_ts', 'events', ['project_id', 'anonymous_id', 'ts'], unique=False,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_events_project_anonymous_id_ts', table_name='events', postgresql_concurrently=True)
        op.drop_index('ix_events_project_user_id_ts', table_name='events', postgresql_concurrently=True)
        op.drop_index('ix_events_project_event_ts', table_name='events', postgresql_concurrently=True)
