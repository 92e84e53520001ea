"""Revoked tokens: (project_id, jti) pairs every worker refuses.

A small table, created empty; no backfill and no lock on the event tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 12:21:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('revoked_tokens',
    sa.Column('project_id', sa.Text(), nullable=False),
    sa.Column('jti', sa.Text(), nullable=False),
    sa.Column('revoked_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('project_id', 'jti', name=op.f('pk_revoked_tokens'))
    )


def downgrade() -> None:
    op.drop_table('revoked_tokens')
