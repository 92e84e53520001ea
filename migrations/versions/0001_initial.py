"""Initial schema: events, hourly counts, idempotency keys.

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 11:21:32.720927
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_counts_hourly',
    sa.Column('project_id', sa.Text(), nullable=False),
    sa.Column('bucket', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'bucket', 'event', name=op.f('pk_event_counts_hourly'))
    )
    op.create_table('events',
    sa.Column('project_id', sa.Text(), nullable=False),
    sa.Column('message_id', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('anonymous_id', sa.Text(), nullable=True),
    sa.Column('ts', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('original_timestamp', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('sent_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('received_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('properties', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('context', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('traits', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('extra', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('project_id', 'message_id', name=op.f('pk_events'))
    )
    op.create_index('ix_events_project_ts', 'events', ['project_id', sa.literal_column('ts DESC'), sa.literal_column('message_id DESC')], unique=False)
    op.create_table('idempotency_keys',
    sa.Column('project_id', sa.Text(), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index('ix_events_project_ts', table_name='events')
    op.drop_table('events')
    op.drop_table('event_counts_hourly')
