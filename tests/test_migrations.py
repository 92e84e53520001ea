"""The migrations and the tables in shared/tables.py describe the same schema, both ways."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.settings import Settings
from shared.tables import metadata
from tally.migrate import downgrade, upgrade


def _differences(url: str) -> list:
    engine = sa.create_engine(Settings(database_url=url).sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def test_migrated_database_matches_the_tables(create_database):
    assert _differences(create_database()) == []


def test_every_migration_reverses_and_reapplies(create_database):
    url = create_database()
    sqlalchemy_url = Settings(database_url=url).sqlalchemy_url
    downgrade(sqlalchemy_url, "base")
    engine = sa.create_engine(sqlalchemy_url)
    try:
        with engine.connect() as conn:
            left = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
            sequences = conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relkind = 'S'")).scalar()
    finally:
        engine.dispose()
    assert left == set() and sequences == 0
    upgrade(sqlalchemy_url)
    assert _differences(url) == []
