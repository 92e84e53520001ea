"""GET /v1/aggregates over HTTP against real Postgres: buckets, zones, exact counts, parameters."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.factories import auth_headers, fold_counts, make_event

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")


def ingest(client, auth, events: list[dict]) -> None:
    for i in range(0, len(events), 1000):
        response = client.post("/v1/batch", json={"batch": events[i : i + 1000]}, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["rejected"] == 0, response.text


def every(start: datetime, end: datetime, step: timedelta, **overrides) -> list[dict]:
    events, t = [], start
    while t < end:
        events.append(make_event(timestamp=t.isoformat().replace("+00:00", "Z"), **overrides))
        t += step
    return events


def aggregates(client, auth, **params) -> dict:
    response = client.get("/v1/aggregates", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def walk(client, auth, **params) -> list[dict]:
    rows, cursor = [], None
    while True:
        page = aggregates(client, auth, **params, **({"cursor": cursor} if cursor else {}))
        rows += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


# --- zones and DST ------------------------------------------------------------------------------


def test_new_york_spring_forward_day_has_23_hours_and_fall_back_day_25(client, auth):
    # One event every 30 minutes: a local day of h hours holds 2h events.
    spring = every(datetime(2026, 3, 7, 5, tzinfo=UTC), datetime(2026, 3, 10, 4, tzinfo=UTC), timedelta(minutes=30))
    fall = every(datetime(2026, 10, 31, 4, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC), timedelta(minutes=30))
    ingest(client, auth, spring + fall)
    spring_rows = aggregates(client, auth, **{"from": "2026-03-07", "to": "2026-03-10", "tz": "America/New_York"})
    assert spring_rows["data"] == [
        {"bucket": "2026-03-07T00:00:00-05:00", "event": "Order Completed", "count": 48},
        {"bucket": "2026-03-08T00:00:00-05:00", "event": "Order Completed", "count": 46},
        {"bucket": "2026-03-09T00:00:00-04:00", "event": "Order Completed", "count": 48},
    ]
    fall_rows = aggregates(client, auth, **{"from": "2026-10-31", "to": "2026-11-03", "tz": "America/New_York"})
    assert fall_rows["data"] == [
        {"bucket": "2026-10-31T00:00:00-04:00", "event": "Order Completed", "count": 48},
        {"bucket": "2026-11-01T00:00:00-04:00", "event": "Order Completed", "count": 50},
        {"bucket": "2026-11-02T00:00:00-05:00", "event": "Order Completed", "count": 48},
    ]


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Europe/Berlin"])
def test_day_buckets_equal_a_recount_by_local_date_in_any_zone(client, auth, zone):
    # Every 10 minutes: half-hour (Kolkata, St John's) and 45-minute (Kathmandu) midnights cut
    # through UTC hours, so those days need the exact edges, not only the hourly rollup.
    events = every(datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 4, tzinfo=UTC), timedelta(minutes=10))
    ingest(client, auth, events)
    tz = ZoneInfo(zone)
    expected = Counter(
        datetime.fromisoformat(e["timestamp"]).astimezone(tz).date() for e in events
    )
    rows = aggregates(client, auth, **{"from": "2026-06-01T00:00:00Z", "to": "2026-06-04T00:00:00Z", "tz": zone})
    got = {datetime.fromisoformat(r["bucket"]).date(): r["count"] for r in rows["data"]}
    assert got == dict(expected)
    for row in rows["data"]:
        bucket = datetime.fromisoformat(row["bucket"])
        assert (bucket.hour, bucket.minute) == (0, 0) or bucket == datetime(2026, 6, 1, tzinfo=UTC)
    assert sum(got.values()) == len(events)


def test_hour_buckets_are_utc_hours_shown_in_the_zone(client, auth):
    ingest(client, auth, every(datetime(2026, 6, 1, 10, tzinfo=UTC), datetime(2026, 6, 1, 12, tzinfo=UTC),
                               timedelta(minutes=20)))
    rows = aggregates(client, auth, **{"from": "2026-06-01T10:00:00Z", "to": "2026-06-01T12:00:00Z",
                                       "interval": "hour", "tz": "Asia/Kolkata"})
    assert rows["data"] == [
        {"bucket": "2026-06-01T15:30:00+05:30", "event": "Order Completed", "count": 3},
        {"bucket": "2026-06-01T16:30:00+05:30", "event": "Order Completed", "count": 3},
    ]


def test_range_edges_inside_an_hour_count_only_events_inside_the_range(client, auth):
    ingest(client, auth, every(datetime(2026, 6, 1, 10, tzinfo=UTC), datetime(2026, 6, 1, 13, tzinfo=UTC),
                               timedelta(minutes=10)))
    # [10:25, 12:35): 10:30..12:30 is 13 events; the partial hours are counted exactly.
    hourly = aggregates(client, auth, **{"from": "2026-06-01T10:25:00Z", "to": "2026-06-01T12:35:00Z",
                                         "interval": "hour"})
    assert [(r["bucket"], r["count"]) for r in hourly["data"]] == [
        ("2026-06-01T10:00:00Z", 3), ("2026-06-01T11:00:00Z", 6), ("2026-06-01T12:00:00Z", 4),
    ]
    total = aggregates(client, auth, **{"from": "2026-06-01T10:25:00Z", "to": "2026-06-01T12:35:00Z",
                                        "interval": "total"})
    assert total["data"] == [{"bucket": "2026-06-01T10:25:00Z", "event": "Order Completed", "count": 13}]


# --- exact counts -------------------------------------------------------------------------------


def test_counts_equal_distinct_stored_events_after_duplicate_laden_ingests(client, auth):
    base = datetime(2026, 5, 1, tzinfo=UTC)
    first = [make_event(event=f"E{i % 3}", timestamp=(base + timedelta(minutes=7 * i)).isoformat()) for i in range(300)]
    ingest(client, auth, first)
    ingest(client, auth, first)  # the whole batch again: all duplicates
    second = [make_event(event=f"E{i % 3}", timestamp=(base + timedelta(minutes=5 * i)).isoformat()) for i in range(100)]
    # Half old, half new, and every new event twice within the batch.
    ingest(client, auth, first[::2] + second + second)
    everything = first + second
    expected = Counter(e["event"] for e in everything)
    rows = aggregates(client, auth, **{"from": "2026-05-01", "to": "2026-05-03", "interval": "total"})
    assert {r["event"]: r["count"] for r in rows["data"]} == dict(expected)
    hourly = walk(client, auth, **{"from": "2026-05-01", "to": "2026-05-03", "interval": "hour", "limit": 17})
    recount = Counter(
        (datetime.fromisoformat(e["timestamp"]).replace(minute=0, second=0), e["event"]) for e in everything
    )
    assert {(datetime.fromisoformat(r["bucket"]), r["event"]): r["count"] for r in hourly} == dict(recount)


def test_unique_users_counts_user_id_else_anonymous_id_exactly(client, auth):
    day = "2026-04-02T12:00:00Z"
    events = (
        [make_event(userId="alice", timestamp=day) for _ in range(3)]
        + [make_event(userId="bob", anonymousId="anon-b", timestamp=day)]
        + [make_event(userId=None, anonymousId="anon-b", timestamp=day)]  # anon-b as its own identity
        + [make_event(userId=None, anonymousId="anon-c", timestamp=day) for _ in range(2)]
        + [make_event(userId="alice", event="Signed Up", timestamp=day)]
    )
    ingest(client, auth, events)
    rows = aggregates(client, auth, **{"from": "2026-04-02", "to": "2026-04-03", "metrics": "count,unique_users"})
    assert rows["data"] == [
        {"bucket": "2026-04-02T00:00:00Z", "event": "Order Completed", "count": 7, "unique_users": 4},
        {"bucket": "2026-04-02T00:00:00Z", "event": "Signed Up", "count": 1, "unique_users": 1},
    ]
    only_users = aggregates(client, auth, **{"from": "2026-04-02", "to": "2026-04-03", "interval": "total",
                                             "metrics": "unique_users"})
    assert only_users["data"][0] == {"bucket": "2026-04-02T00:00:00Z", "event": "Order Completed", "unique_users": 4}


def test_non_track_events_count_under_their_dollar_name_and_filter_selects_names(client, auth):
    when = "2026-04-05T08:00:00Z"
    ingest(client, auth, [
        make_event(timestamp=when),
        make_event(type="identify", event=None, traits={"plan": "pro"}, timestamp=when),
        make_event(type="page", event=None, name="Home", timestamp=when),
        make_event(type="page", event=None, name="Docs", timestamp=when),
    ])
    params = {"from": "2026-04-05", "to": "2026-04-06", "interval": "total"}
    rows = aggregates(client, auth, **params)
    assert [(r["event"], r["count"]) for r in rows["data"]] == [("$identify", 1), ("$page", 2), ("Order Completed", 1)]
    filtered = aggregates(client, auth, **params, event=["$page", "Order Completed"])
    assert [(r["event"], r["count"]) for r in filtered["data"]] == [("$page", 2), ("Order Completed", 1)]


def test_counts_are_visible_as_soon_as_ingest_answers(client, auth):
    now = datetime.now(UTC).replace(microsecond=0)
    for n in range(1, 4):
        ingest(client, auth, [make_event(timestamp=now.isoformat())])
        rows = aggregates(client, auth, interval="total")  # default range: the last 7 days
        assert rows["data"][0]["count"] == n


def test_counts_are_the_same_before_and_after_the_deltas_are_folded(client, auth, db, project, database_url):
    # Ingest appends count increments; a folder moves them into the rollups each second.
    # Holding the folder's lock keeps this project's increments unfolded for the first reads.
    start = datetime(2026, 3, 2, tzinfo=UTC)
    events = every(start, start + timedelta(days=3), timedelta(minutes=37))
    queries = [
        {"interval": "hour", "from": "2026-03-02", "to": "2026-03-05", "limit": 1000},
        {"interval": "day", "from": "2026-03-01", "to": "2026-03-06"},
        {"interval": "total", "from": "2026-03-01", "to": "2026-03-06"},
    ]
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('tally.fold_counts', 0))")
        ingest(client, auth, events)
        unfolded = db.execute(
            "SELECT coalesce(sum(n), 0) FROM event_count_deltas WHERE project_id = %s", [project]
        ).fetchone()[0]
        assert unfolded == len(events)
        before = [walk(client, auth, **q) for q in queries]
    fold_counts(db)
    assert db.execute("SELECT count(*) FROM event_count_deltas WHERE project_id = %s", [project]).fetchone()[0] == 0
    after = [walk(client, auth, **q) for q in queries]
    assert before == after
    assert sum(r["count"] for r in after[2]) == len(events)


def test_buckets_without_events_are_absent(client, auth):
    ingest(client, auth, [make_event(timestamp="2026-02-01T05:00:00Z"), make_event(timestamp="2026-02-04T05:00:00Z")])
    rows = aggregates(client, auth, **{"from": "2026-02-01", "to": "2026-02-08"})
    assert [r["bucket"] for r in rows["data"]] == ["2026-02-01T00:00:00Z", "2026-02-04T00:00:00Z"]


# --- parameters, scope, isolation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "2026-05-02", "to": "2026-05-01"}, "from"),
        ({"metrics": "count,revenue"}, "metrics"),
        ({"metrics": ""}, "metrics"),
        ({"interval": "week"}, "interval"),
        ({"tz": "Mars/Olympus_Mons"}, "tz"),
        ({"tz": "../../etc/passwd"}, "tz"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"from": "0001-01-01T00:00:00Z"}, "from"),
    ],
)
def test_bad_parameter_is_422_problem_naming_it(client, auth, params, parameter):
    response = client.get("/v1/aggregates", params=params, headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_parameter"
    assert f"query.{parameter}" in [e["location"] for e in response.json()["errors"]]


@pytest.mark.parametrize("path", ["/v1/aggregates", "/v1/events", "/v1/events/some-id"])
def test_every_query_endpoint_needs_the_query_scope(client, project, path):
    response = client.get(path, headers=auth_headers(project, "ingest admin"))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert client.get(path).status_code == 401


def test_aggregates_never_show_another_projects_events(client, auth):
    ingest(client, auth, [make_event(timestamp="2026-03-20T10:00:00Z")])
    other = auth_headers("p_" + uuid.uuid4().hex[:12])
    params = {"from": "2026-03-20", "to": "2026-03-21"}
    assert aggregates(client, auth, **params)["data"] != []
    for interval in ("hour", "day", "total"):
        assert aggregates(client, other, **params, interval=interval, metrics="count,unique_users")["data"] == []


def test_query_metrics_are_exported(client, auth):
    aggregates(client, auth, interval="total")
    text = client.get("/metrics").text
    assert 'tally_query_duration_seconds_count{endpoint="aggregates"}' in text
    assert 'tally_query_rows_returned_count{endpoint="aggregates"}' in text


def test_daily_counts_equal_a_recount_after_duplicate_laden_ingests(client, auth, db, project):
    base = datetime(2026, 5, 10, 20, tzinfo=UTC)
    events = [make_event(event=f"E{i % 4}", timestamp=(base + timedelta(minutes=13 * i)).isoformat()) for i in range(400)]
    ingest(client, auth, events[:300])
    ingest(client, auth, events[200:] + events[:50])
    recount = db.execute(
        "SELECT date_trunc('day', ts, 'UTC'), event, count(*) FROM events WHERE project_id = %s "
        "GROUP BY 1, 2 ORDER BY 1, 2", [project],
    ).fetchall()
    fold_counts(db)
    maintained = db.execute(
        "SELECT day, event, n FROM event_counts_daily WHERE project_id = %s ORDER BY 1, 2", [project]
    ).fetchall()
    assert maintained == recount
    assert sum(n for _, _, n in maintained) == 400


def test_aggregate_walk_returns_each_row_once_while_new_events_keep_arriving(client, auth):
    base = datetime(2026, 7, 1, tzinfo=UTC)
    ingest(client, auth, [
        make_event(event=f"E{i % 5}", timestamp=(base + timedelta(minutes=11 * i)).isoformat()) for i in range(200)
    ])
    params = {"from": "2026-07-01", "to": "2026-07-03", "interval": "hour", "limit": 7}
    before = {(r["bucket"], r["event"]) for r in walk(client, auth, **params)}
    seen, cursor, step = [], None, 0
    while True:
        page = aggregates(client, auth, **params, **({"cursor": cursor} if cursor else {}))
        seen += [(r["bucket"], r["event"]) for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        step += 1
        # New events in walked, current and future buckets, with new and existing names.
        ingest(client, auth, [
            make_event(event=f"E{step % 7}", timestamp=(base + timedelta(minutes=37 * step * k)).isoformat())
            for k in range(3)
        ])
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


def test_sparse_events_decades_apart_are_found_on_an_hourly_grid(client, auth):
    ingest(client, auth, [make_event(timestamp="1975-05-05T05:05:00Z"), make_event(timestamp="2026-01-01T00:30:00Z"),
                          make_event(timestamp="2026-01-01T00:45:00Z", event="Later")])
    rows = walk(client, auth, **{"from": "1970-01-01", "to": "2026-11-01", "interval": "hour", "limit": 1})
    assert [(r["bucket"], r["event"], r["count"]) for r in rows] == [
        ("1975-05-05T05:00:00Z", "Order Completed", 1),
        ("2026-01-01T00:00:00Z", "Later", 1),
        ("2026-01-01T00:00:00Z", "Order Completed", 1),
    ]
