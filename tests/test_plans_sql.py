"""Each schema statement reads pk_event_schemas (EXPLAIN on analysed data): the list takes both its
keyset bound and its order from the index, at any depth, with no sort of the project's rows."""

from __future__ import annotations

import psycopg
import pytest

from plans import sql


@pytest.fixture(scope="module")
def conn(create_database):
    url = create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        # 8 projects of 2,500 schemas: enough rows that a scan and a sort are real alternatives.
        conn.execute(
            """
            INSERT INTO event_schemas (project_id, event, schema, mode, version, etag)
            SELECT 'plan_p' || (i % 8), 'Event ' || i, '{"type": "object"}', 'flag', 1, md5(i::text)
            FROM generate_series(1, 20000) AS i
            """
        )
        conn.execute("VACUUM (ANALYZE) event_schemas")
        yield conn


def plan(conn, statement: str, params: dict) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement, params).fetchall())


def test_first_page_is_read_in_order_from_the_primary_key(conn):
    text = plan(conn, sql.LIST_SCHEMAS, {"project": "plan_p1", "limit": 101})
    assert "Index Scan using pk_event_schemas" in text
    assert "Sort" not in text and "Seq Scan" not in text


def test_a_later_page_takes_its_keyset_bound_from_the_primary_key(conn):
    # Halfway through: past the bound are still far more rows than a page.
    text = plan(conn, sql.LIST_SCHEMAS_AFTER, {"project": "plan_p1", "after": "Event 14", "limit": 101})
    assert "Index Scan using pk_event_schemas" in text
    assert "Sort" not in text and "Seq Scan" not in text
    assert "event > " in text.split("Index Cond", 1)[1].split("\n", 1)[0]  # a bound, not a filter


@pytest.mark.parametrize("statement, params", [
    (sql.GET_SCHEMA, {}),
    (sql.REPLACE_SCHEMA, {"schema": "{}", "mode": "flag", "description": None, "sub": "s", "etag": "t2", "etags": ["t1"],
                          "revision": 7, "now": "2026-12-02T00:00:00Z"}),
    (sql.DELETE_SCHEMA, {"etags": None}),
])
def test_one_schema_is_found_by_its_primary_key(conn, statement, params):
    text = plan(conn, statement, {"project": "plan_p1", "event": "Event 41", **params})
    assert "pk_event_schemas" in text and "Seq Scan" not in text


def test_the_name_column_sorts_by_bytes_whatever_the_database_locale(conn):
    # The list's order is the column's collation; "C" is byte order on every server.
    collation = conn.execute(
        "SELECT collation_name FROM information_schema.columns "
        "WHERE table_name = 'event_schemas' AND column_name = 'event'"
    ).fetchone()[0]
    assert collation == "C"
