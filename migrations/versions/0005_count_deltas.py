"""Count deltas: ingest appends count increments; a folder moves them into the rollups.

Creating the table takes no lock on the event tables. Downgrade folds what is left into the
rollups first, so no count is lost either way.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:30:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_count_deltas',
    sa.Column('project_id', sa.Text(), nullable=False),
    sa.Column('bucket', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False)
    )
    op.create_index('ix_event_count_deltas_project_id_bucket', 'event_count_deltas', ['project_id', 'bucket'], unique=False)


def downgrade() -> None:
    op.execute(
        "WITH moved AS (DELETE FROM event_count_deltas RETURNING project_id, bucket, event, n), "
        "hourly AS (INSERT INTO event_counts_hourly AS c (project_id, bucket, event, n) "
        "SELECT project_id, bucket, event, sum(n) FROM moved GROUP BY 1, 2, 3 "
        "ON CONFLICT (project_id, bucket, event) DO UPDATE SET n = c.n + EXCLUDED.n) "
        "INSERT INTO event_counts_daily AS d (project_id, day, event, n) "
        "SELECT project_id, date_trunc('day', bucket, 'UTC'), event, sum(n) FROM moved GROUP BY 1, 2, 3 "
        "ON CONFLICT (project_id, day, event) DO UPDATE SET n = d.n + EXCLUDED.n"
    )
    op.drop_index('ix_event_count_deltas_project_id_bucket', table_name='event_count_deltas')
    op.drop_table('event_count_deltas')
