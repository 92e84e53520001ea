"""Daily counts: event_counts_daily, backfilled from the hourly counts.

The backfill holds a SHARE lock on event_counts_hourly, so no ingest commits between the copy
and the end of this migration. Ingest code that maintains the daily counts must be running
before ingest resumes: events stored by older code afterwards would be missing from them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 11:41:00.540995
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_counts_daily',
    sa.Column('project_id', sa.Text(), nullable=False),
    sa.Column('day', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'day', 'event', name=op.f('pk_event_counts_daily'))
    )
    op.execute("LOCK TABLE event_counts_hourly IN SHARE MODE")
    op.execute(
        "INSERT INTO event_counts_daily (project_id, day, event, n) "
        "SELECT project_id, date_trunc('day', bucket, 'UTC'), event, sum(n) FROM event_counts_hourly GROUP BY 1, 2, 3"
    )


def downgrade() -> None:
    op.drop_table('event_counts_daily')
