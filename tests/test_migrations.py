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


def test_0008_forgets_the_write_keys_stored_in_extra(create_database):
    import psycopg

    url = create_database(migrate=False)
    sqlalchemy_url = Settings(database_url=url).sqlalchemy_url
    upgrade(sqlalchemy_url, "0007")
    rows = [("only-key", '{"writeKey": "eyJ.secret"}'), ("key-and-more", '{"writeKey": "eyJ.secret", "library": "x"}'),
            ("no-key", '{"library": "y"}'), ("no-extra", None)]
    with psycopg.connect(url, autocommit=True) as conn:
        for message_id, extra in rows:
            conn.execute(
                "INSERT INTO events (project_id, message_id, type, event, user_id, ts, received_at, extra) "
                "VALUES ('p', %s, 'track', 'E', 'u', now(), now(), %s::jsonb)", [message_id, extra],
            )
        upgrade(sqlalchemy_url)
        kept = dict(conn.execute("SELECT message_id, extra FROM events ORDER BY message_id").fetchall())
    assert kept == {"only-key": None, "key-and-more": {"library": "x"}, "no-key": {"library": "y"}, "no-extra": None}
