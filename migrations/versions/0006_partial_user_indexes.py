"""User indexes without NULL entries: each event usually has only a userId or an anonymousId.

`user_id = u` implies `user_id IS NOT NULL`, so the user filter of /v1/events uses the partial
indexes as it used the full ones; ingest stops writing index entries that no query reads.
Built CONCURRENTLY under a new name, then swapped, so ingest keeps writing meanwhile.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 13:06:00.000000
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

COLUMNS = ("user_id", "anonymous_id")


def _rebuild(partial: bool) -> None:
    with op.get_context().autocommit_block():
        for column in COLUMNS:
            name = f"ix_events_project_{column}_ts"
            where = f" WHERE {column} IS NOT NULL" if partial else ""
            op.execute(f"CREATE INDEX CONCURRENTLY {name}_new ON events (project_id, {column}, ts){where}")
            op.execute(f"DROP INDEX CONCURRENTLY {name}")
            op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
