"""Forget the write keys stored before ingest dropped them: Segment's browser SDK puts its write
key (a Tally ingest token) in every batch item, and such events kept it in `extra`, where
`GET /v1/events` showed it to every reader of the project.

One statement, only over the events that hold one (`extra ? 'writeKey'`); an `extra` left empty
becomes NULL, as ingest writes it. Not reversible: the keys are not kept anywhere.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:20:00.000000
"""
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE events SET extra = nullif(extra - 'writeKey', '{}'::jsonb) WHERE extra ? 'writeKey'"
    )


def downgrade() -> None:
    pass  # nothing to restore: the keys were secrets that should never have been stored
