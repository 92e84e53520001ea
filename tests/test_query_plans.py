"""Each query statement is served by the index it was designed for (EXPLAIN on analysed data).

A database of its own holds 60k events of 6 projects over 30 days, loaded with set-based SQL
and analysed, so the planner sees realistic statistics rather than an empty table.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.sql import SQL, Composable

from query import sql
from query.buckets import Grid

UTC = timezone.utc
END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def conn(create_database):
    url = create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO events (project_id, message_id, type, event, user_id, anonymous_id, ts, received_at, properties)
            SELECT 'plan_p' || (i %% 6), md5(i::text), 'track', 'Event ' || (i %% 50), 'user-' || (i %% 5000),
                   'anon-' || (i %% 7000), %(end)s - (i * interval '43 seconds'), now(), '{"plan": "pro"}'
            FROM generate_series(1, 60000) AS i
            """,
            {"end": END},
        )
        conn.execute(
            "INSERT INTO event_counts_hourly SELECT project_id, date_trunc('hour', ts, 'UTC'), event, count(*) "
            "FROM events GROUP BY 1, 2, 3"
        )
        conn.execute(
            "INSERT INTO event_counts_daily SELECT project_id, date_trunc('day', ts, 'UTC'), event, count(*) "
            "FROM events GROUP BY 1, 2, 3"
        )
        conn.execute("VACUUM (ANALYZE) event_counts_daily")
        conn.execute("VACUUM (ANALYZE) events")
        conn.execute("VACUUM (ANALYZE) event_counts_hourly")
        yield conn


def plan(conn, statement: Composable, params: dict) -> str:
    return "\n".join(r[0] for r in conn.execute(SQL("EXPLAIN {}").format(statement), params).fetchall())


def window_params(interval: str, zone: str, days: int, size: int = 1, **extra) -> dict:
    grid = Grid(interval, ZoneInfo(zone), END - timedelta(days=days), END)
    window = list(grid.buckets_from(grid.label_of(grid.start)))[:size]
    return {
        "project": "plan_p1", "label": [b.label for b in window], "lo": [b.lo for b in window],
        "hi": [b.hi for b in window], "flo": [b.flo for b in window], "fhi": [b.fhi for b in window],
        "dlo": [b.dlo for b in window], "dhi": [b.dhi for b in window],
        "limit": 101, "events": None, "after_label": None, "after_event": None, **extra,
    }


def test_hourly_counts_read_the_rollup_primary_key_never_raw_events(conn):
    text = plan(conn, sql.counts_window(events=False, after=False, unique_users=False), window_params("hour", "UTC", 7, 24))
    assert "pk_event_counts_hourly" in text
    assert "Seq Scan" not in text


def test_long_range_counts_read_whole_days_from_the_daily_rollup(conn):
    # A total over 30 days starting at 10:00: whole days from the daily rollup, the first
    # day's remaining hours from the hourly one; neither scans raw events.
    params = window_params("total", "UTC", 30)
    params["lo"] = [params["lo"][0] + timedelta(hours=10)]
    params["flo"], params["dlo"] = params["lo"], [END - timedelta(days=29)]
    text = plan(conn, sql.counts_window(events=False, after=False, unique_users=False), params)
    assert "pk_event_counts_daily" in text and "pk_event_counts_hourly" in text
    assert "Seq Scan" not in text


def test_filtered_resumed_counts_keep_the_rollup_index(conn):
    params = window_params("day", "UTC", 30, 4, events=["Event 1", "Event 2"], after_label=END - timedelta(days=30),
                           after_event="Event 1")
    text = plan(conn, sql.counts_window(events=True, after=True, unique_users=False), params)
    assert "pk_event_counts_hourly" in text
    assert "Seq Scan" not in text


def test_sub_hour_day_edges_read_raw_events_by_time_not_by_event_name(conn):
    # Kolkata midnights are at :30 UTC: the half hours come from raw events, through the ts index.
    text = plan(conn, sql.counts_window(events=False, after=False, unique_users=False), window_params("day", "Asia/Kolkata", 30, 4))
    assert "pk_event_counts_hourly" in text
    assert "ix_events_project_ts" in text
    assert "Seq Scan" not in text
    assert "ix_events_project_event_ts" not in text


def test_unique_users_are_an_index_only_scan_per_page_row(conn):
    text = plan(conn, sql.counts_window(events=False, after=False, unique_users=True), window_params("day", "UTC", 30))
    assert "Index Only Scan using ix_events_project_event_ts" in text
    assert "Seq Scan" not in text


def list_params(**extra) -> dict:
    base = {"project": "plan_p1", "events": None, "user": None, "type": None, "start": None, "end": None,
            "limit": 101, "after_ts": None, "after_id": None}
    return {**base, **extra}


def test_event_pages_at_any_depth_read_the_ts_index_in_order(conn):
    first = plan(conn, sql.list_events(frozenset()), list_params())
    deep = plan(
        conn, sql.list_events(frozenset({"after"})),
        list_params(after_ts=END - timedelta(days=20), after_id="8"),
    )
    for text in (first, deep):
        assert "Index Scan using ix_events_project_ts" in text
        assert "Sort" not in text and "Seq Scan" not in text
    assert "Index Cond" in deep and "ROW(ts, message_id) <" in deep  # the keyset bound is an index condition


def test_event_pages_filtered_by_name_use_the_event_index(conn):
    text = plan(
        conn, sql.list_events(frozenset({"events", "after"})),
        list_params(events=["Event 3"], after_ts=END - timedelta(days=5), after_id="8"),
    )
    assert "ix_events_project_event_ts" in text
    assert "Seq Scan" not in text


def test_event_pages_filtered_by_user_use_both_identity_indexes(conn):
    text = plan(conn, sql.list_events(frozenset({"user"})),
                list_params(user="user-17"))
    assert "ix_events_project_user_id_ts" in text and "ix_events_project_anonymous_id_ts" in text
    assert "Seq Scan" not in text


def test_single_event_lookup_uses_the_primary_key(conn):
    text = plan(conn, sql.GET_EVENT, {"project": "plan_p1", "message_id": "abc"})
    assert "pk_events" in text


def test_flagged_event_pages_read_the_partial_violations_index_in_order(conn):
    # Half the events broke their schema in flag mode: only those have index entries, and a page
    # of them is read in order from the partial index (keyset bound as an index condition).
    # With only a few hundred flagged, Postgres rather fetches them all through the same index
    # and sorts them, which is as cheap; this checks the case where it matters.
    conn.execute(
        "UPDATE events SET violations = '[{\"pointer\": \"/properties\", \"rule\": \"/required\", \"message\": \"m\"}]' "
        "WHERE project_id = 'plan_p1' AND ('x' || substr(message_id, 1, 2))::bit(8)::int < 128"
    )
    conn.execute("VACUUM (ANALYZE) events")
    for after in (False, True):
        text = plan(
            conn,
            sql.list_events(frozenset({"after", "violations"} if after else {"violations"})),
            list_params(after_ts=END - timedelta(days=5), after_id="8"),
        )
        assert "Index Scan using ix_events_project_violations_ts" in text
        assert "Sort" not in text and "Seq Scan" not in text
