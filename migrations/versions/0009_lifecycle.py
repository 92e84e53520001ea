"""Data lifecycle: per-project settings (retention), erasure jobs and suppressed users.

`projects.settings` holds only what a project set itself (`PATCH /v1/project`): a key absent
falls back to the service's default (`TALLY_RETENTION_DAYS`), a JSON null in it means "keep
forever" whatever the default. The erasure queue is a partial index over the jobs not finished,
so the runner finds work without reading the history. New empty tables, and a storage
parameter of events (a catalog change): nothing waits on events for long.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

TZ = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # Retention removes old events in bounded batches; vacuum a table after 1% of it is dead
    # rather than the default 20%, so that the space is reusable soon after each pass.
    op.execute("ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.01)")
    op.create_table(
        'projects',
        sa.Column('project_id', sa.Text(), nullable=False),
        sa.Column('settings', postgresql.JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column('updated_at', TZ, nullable=False),
        sa.Column('updated_by', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('project_id', name='pk_projects'),
    )
    op.create_table(
        'erasures',
        sa.Column('project_id', sa.Text(), nullable=False),
        sa.Column('id', sa.Text(), nullable=False),
        sa.Column('users', postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column('suppress', sa.Boolean(), nullable=False),
        sa.Column('status', sa.Text(), nullable=False),
        sa.Column('events_erased', sa.BigInteger(), nullable=False, server_default=sa.text('0')),
        sa.Column('requested_at', TZ, nullable=False),
        sa.Column('finished_at', TZ, nullable=True),
        sa.Column('requested_by', sa.Text(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('project_id', 'id', name='pk_erasures'),
        sa.CheckConstraint("status IN ('pending', 'running', 'done', 'failed')", name='ck_erasures_status'),
    )
    op.create_index('ix_erasures_project_id_requested_at', 'erasures',
                    ['project_id', sa.text('requested_at DESC'), sa.text('id DESC')])
    op.create_index('ix_erasures_unfinished', 'erasures', ['requested_at'],
                    postgresql_where=sa.text("status IN ('pending', 'running')"))
    op.create_table(
        'suppressions',
        sa.Column('project_id', sa.Text(), nullable=False),
        sa.Column('user_id', sa.Text(collation='C'), nullable=False),
        sa.Column('erasure_id', sa.Text(), nullable=True),
        sa.Column('created_at', TZ, nullable=False),
        sa.Column('created_by', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('project_id', 'user_id', name='pk_suppressions'),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE events RESET (autovacuum_vacuum_scale_factor)")
    op.drop_table('suppressions')
    op.drop_table('erasures')
    op.drop_table('projects')
