"""The data lifecycle over HTTP on a real Postgres: project settings, retention, erasure and
suppression. After every removal, every count and unique-user figure of every bucket equals
what the remaining raw events give."""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from lifecycle import service as lifecycle_service
from shared.logging import JSONFormatter
from shared.projects import retained_from
from tally.app import create_app
from tests.factories import assert_counts_match_events, auth_headers, make_event, token_for
from tests.helpers import make_settings, start_server, stop_server

NOW = datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def ago(**delta: float) -> str:
    return iso(NOW - timedelta(**delta))


def post(client, auth: dict, events: list[dict]) -> dict:
    response = client.post("/v1/batch", json={"batch": events}, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def stored_ids(db, project: str, **where: str) -> set[str]:
    sql = "SELECT message_id FROM events WHERE project_id = %(project)s"
    if "user" in where:
        sql += " AND (user_id = %(user)s OR anonymous_id = %(user)s)"
    return {r[0] for r in db.execute(sql, {"project": project, **where})}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.05)
    return value


def wait_done(client, auth: dict, job: str, timeout: float = 30) -> dict:
    def done():
        state = client.get(f"/v1/erasures/{job}", headers=auth).json()
        return state if state["status"] in ("done", "failed") else None

    return wait_for(done, timeout, f"erasure {job} finished")


def all_aggregates(client, auth: dict, interval: str, metrics: str = "count,unique_users", **params) -> list[dict]:
    rows, cursor = [], None
    while True:
        query = {"interval": interval, "metrics": metrics, "limit": 1000, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/aggregates", params=query, headers=auth)
        assert response.status_code == 200, response.text
        page = response.json()
        rows += page["data"]
        if not (cursor := page["next_cursor"]):
            return rows


def assert_aggregates_match_raw_events(client, db, project: str, auth: dict, start: str, end: str) -> None:
    """Every bucket's count and unique users, per hour, UTC day and total, as the stored events give them."""
    raw = db.execute(
        "SELECT event, ts, coalesce(user_id, anonymous_id) FROM events WHERE project_id = %s AND ts >= %s AND ts < %s",
        [project, start, end],
    ).fetchall()
    labels = {
        "hour": lambda t: t.replace(minute=0, second=0, microsecond=0),
        "day": lambda t: t.replace(hour=0, minute=0, second=0, microsecond=0),
        "total": lambda t: datetime.fromisoformat(start.replace("Z", "+00:00")),
    }
    for interval, label in labels.items():
        counts: Counter = Counter()
        users: dict = {}
        for event, ts, user in raw:
            key = (label(ts.astimezone(UTC)), event)
            counts[key] += 1
            users.setdefault(key, set()).add(user)
        expected = sorted((k[0], k[1], n, len(users[k])) for k, n in counts.items())
        got = sorted(
            (datetime.fromisoformat(r["bucket"]).astimezone(UTC), r["event"], r["count"], r["unique_users"])
            for r in all_aggregates(client, auth, interval, **{"from": start, "to": end})
        )
        assert got == expected, interval


# --- project settings --------------------------------------------------------------------------


def test_settings_default_to_keep_forever_and_a_patch_sets_only_what_it_names(client, auth, project):
    response = client.get("/v1/project", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"project": project, "retention_days": None, "retention_source": "default",
                               "retained_from": None, "updated_at": None, "updated_by": None}
    changed = client.patch("/v1/project", json={"retention_days": 30}, headers={
        **auth_headers(project), "Content-Type": "application/merge-patch+json"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["retention_days"] == 30 and body["retention_source"] == "project"
    assert body["updated_by"] == "dev" and body["updated_at"]
    expected = retained_from(30, datetime.now(UTC))
    assert abs(datetime.fromisoformat(body["retained_from"]) - expected) <= timedelta(hours=1)
    assert client.patch("/v1/project", json={}, headers=auth).json()["retention_days"] == 30
    forever = client.patch("/v1/project", json={"retention_days": None}, headers=auth).json()
    assert forever["retention_days"] is None and forever["retention_source"] == "project"
    assert client.get("/v1/project", headers=auth).json() == forever


@pytest.mark.parametrize("body, location", [
    ({"retention_days": "30"}, "body.retention_days"),
    ({"retention_days": True}, "body.retention_days"),
    ({"retention_days": 1.5}, "body.retention_days"),
    ({"retention_days": 0}, "body.retention_days"),
    ({"retention_days": 36501}, "body.retention_days"),
    ({"retention": 30}, "body.retention"),
    ([], "body"),
])
def test_a_bad_setting_is_422_naming_the_field_and_changes_nothing(client, auth, body, location):
    response = client.patch("/v1/project", json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["location"] for e in response.json()["errors"]] == [location]
    assert client.get("/v1/project", headers=auth).json()["updated_at"] is None


def test_settings_need_the_admin_scope(client, project):
    headers = auth_headers(project, "ingest query")
    assert client.get("/v1/project", headers=headers).status_code == 403
    assert client.patch("/v1/project", json={"retention_days": 1}, headers=headers).status_code == 403


def test_the_service_default_applies_to_projects_that_set_none(database_url, project):
    with TestClient(create_app(make_settings(database_url, retention_days=10)), raise_server_exceptions=False) as app:
        auth = auth_headers(project)
        body = app.get("/v1/project", headers=auth).json()
        assert body["retention_days"] == 10 and body["retention_source"] == "default"
        result = post(app, auth, [make_event(timestamp=ago(days=11)), make_event(timestamp=ago(days=9))])
        assert result["accepted"] == 1 and result["errors"][0]["code"] == "outside_retention"
        # A project's own null keeps its events forever, whatever the default.
        app.patch("/v1/project", json={"retention_days": None}, headers=auth)
        assert post(app, auth, [make_event(timestamp=ago(days=400))])["accepted"] == 1


# --- retention ---------------------------------------------------------------------------------


def test_an_event_older_than_the_retention_is_rejected_alone(client, auth, db, project):
    client.patch("/v1/project", json={"retention_days": 7}, headers=auth)
    old, fresh = make_event(timestamp=ago(days=8)), make_event(timestamp=ago(days=6))
    result = post(client, auth, [old, fresh])
    assert result["accepted"] == 1 and result["rejected"] == 1
    assert result["errors"][0]["code"] == "outside_retention" and result["errors"][0]["messageId"] == old["messageId"]
    assert stored_ids(db, project) == {fresh["messageId"]}


@pytest.fixture
def fast_jobs(monkeypatch):
    """The lifecycle loops at test speed: retention every 0.2 s, failing jobs given up after 1 s."""
    monkeypatch.setattr(lifecycle_service, "RETENTION_INTERVAL_SECONDS", 0.2)
    monkeypatch.setattr(lifecycle_service, "ERASURE_GIVE_UP_SECONDS", 1.0)
    monkeypatch.setattr(lifecycle_service, "REMOVE_BATCH", 7)  # several steps per pass and per job


@pytest.fixture
def fast_app(database_url, fast_jobs) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(database_url)), raise_server_exceptions=False) as app:
        yield app


def test_retention_removes_what_aged_out_by_itself_and_every_figure_follows(fast_app, db, project):
    auth = auth_headers(project)
    events = [make_event(event=f"E{i % 3}", userId=f"u{i % 5}", timestamp=ago(days=d, minutes=7 * i))
              for i, d in enumerate([1, 2, 3, 10, 11, 12, 25, 26, 40, 41, 42, 60] * 3)]
    assert post(fast_app, auth, events)["accepted"] == len(events)
    start, end = ago(days=90), ago(days=-1)
    assert_aggregates_match_raw_events(fast_app, db, project, auth, start, end)

    fast_app.patch("/v1/project", json={"retention_days": 20}, headers=auth)
    cutoff = retained_from(20, datetime.now(UTC))
    kept = {e["messageId"] for e in events if datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) >= cutoff}
    wait_for(lambda: stored_ids(db, project) == kept, 10, "the retention pass")
    assert_counts_match_events(db, project)
    assert_aggregates_match_raw_events(fast_app, db, project, auth, start, end)
    answer = fast_app.get("/v1/aggregates", params={"from": start, "to": end, "interval": "total"}, headers=auth).json()
    assert datetime.fromisoformat(answer["retained_from"]) == cutoff

    # A resend of every event: the kept ones are duplicates, the removed ones are refused.
    again = post(fast_app, auth, events)
    assert again["accepted"] == 0 and again["duplicates"] == len(kept)
    assert {e["code"] for e in again["errors"]} == {"outside_retention"}
    assert again["rejected"] == len(events) - len(kept)


def test_aggregates_count_nothing_before_the_retention_even_before_the_pass(client, auth, db, project):
    post(client, auth, [make_event(timestamp=ago(days=5)), make_event(timestamp=ago(hours=3))])
    client.patch("/v1/project", json={"retention_days": 2}, headers=auth)  # no pass runs in 30 s
    answer = client.get("/v1/aggregates", params={"from": ago(days=10), "to": ago(days=-1), "interval": "total"},
                        headers=auth).json()
    assert [row["count"] for row in answer["data"]] == [1]
    assert answer["retained_from"] is not None
    assert len(stored_ids(db, project)) == 2  # still stored: counted no more, removed by the next pass


def test_without_retention_aggregates_say_everything_is_kept(client, auth):
    answer = client.get("/v1/aggregates", headers=auth).json()
    assert answer["retained_from"] is None


# --- erasure -----------------------------------------------------------------------------------


def seed_people(client, auth: dict) -> list[dict]:
    events = []
    for i in range(40):
        person = ("alice", "bob", "carol")[i % 3]
        identity = {"userId": person} if i % 2 else {"userId": None, "anonymousId": person}
        events.append(make_event(event=f"E{i % 4}", timestamp=ago(hours=i * 5), **identity))
    assert post(client, auth, events)["accepted"] == 40
    return events


def test_an_erasure_removes_every_event_of_the_ids_and_every_figure_moves_with_them(fast_app, db, project):
    auth = auth_headers(project)
    seed_people(fast_app, auth)
    start, end = ago(days=30), ago(days=-1)
    response = fast_app.post("/v1/erasures", json={"users": ["alice", "nobody"]}, headers=auth)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/erasures/{job['id']}"
    assert job["status"] == "pending" and job["users"] == ["alice", "nobody"] and job["suppress"] is False
    assert job["requested_by"] == "dev" and job["events_erased"] == 0 and job["finished_at"] is None
    done = wait_done(fast_app, auth, job["id"])
    assert done["status"] == "done" and done["events_erased"] == 14 and done["error"] is None
    assert stored_ids(db, project, user="alice") == set()
    assert len(stored_ids(db, project)) == 26
    assert_counts_match_events(db, project)
    assert_aggregates_match_raw_events(fast_app, db, project, auth, start, end)
    # Without suppression, a new event of the id is stored again, and kept.
    assert post(fast_app, auth, [make_event(userId="alice")])["accepted"] == 1


def test_erasure_jobs_are_listed_newest_first_and_paged(client, auth):
    ids = [client.post("/v1/erasures", json={"users": [f"x{i}"]}, headers=auth).json()["id"] for i in range(3)]
    first = client.get("/v1/erasures", params={"limit": 2}, headers=auth).json()
    second = client.get("/v1/erasures", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth).json()
    assert [j["id"] for j in first["data"] + second["data"]] == ids[::-1]
    assert second["next_cursor"] is None


def test_an_erasure_with_an_idempotency_key_is_recorded_once(client, auth, db, project):
    headers = {**auth, "Idempotency-Key": "erase-once"}
    first = client.post("/v1/erasures", json={"users": ["dave"]}, headers=headers)
    again = client.post("/v1/erasures", json={"users": ["dave"]}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    other = client.post("/v1/erasures", json={"users": ["erin"]}, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_mismatch"
    assert db.execute("SELECT count(*) FROM erasures WHERE project_id = %s", [project]).fetchone()[0] == 1


@pytest.mark.parametrize("body, location", [
    ({"users": []}, "body.users"),
    ({"users": [f"u{i}" for i in range(1001)]}, "body.users"),
    ({"users": ["x" * 256]}, "body.users.0"),
    ({"users": [""]}, "body.users.0"),
    ({"users": [123]}, "body.users.0"),
    ({"users": ["a\u0000b"]}, "body.users.0"),
    ({"users": "alice"}, "body.users"),
    ({"users": ["alice"], "suppress": "true"}, "body.suppress"),
    ({"users": ["alice"], "suppress": 1}, "body.suppress"),
    ({"users": ["alice"], "everything": True}, "body.everything"),
    ({}, "body.users"),
])
def test_a_bad_erasure_request_is_422_naming_the_field_and_records_nothing(client, auth, db, project, body, location):
    response = client.post("/v1/erasures", json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert [e["location"] for e in response.json()["errors"]] == [location]
    assert db.execute("SELECT count(*) FROM erasures WHERE project_id = %s", [project]).fetchone()[0] == 0


def test_an_unknown_job_is_404(client, auth):
    response = client.get("/v1/erasures/er_nothing", headers=auth)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_erasure_needs_the_admin_scope(client, project):
    headers = auth_headers(project, "ingest query")
    assert client.post("/v1/erasures", json={"users": ["a"]}, headers=headers).status_code == 403
    assert client.get("/v1/erasures", headers=headers).status_code == 403


# --- suppression -------------------------------------------------------------------------------


def test_suppression_refuses_new_events_from_the_202_on_until_lifted(client, auth, db, project):
    response = client.post("/v1/erasures", json={"users": ["mallory", "x/y z"], "suppress": True}, headers=auth)
    assert response.status_code == 202
    for identity in ({"userId": "mallory"}, {"userId": None, "anonymousId": "mallory"}, {"userId": "x/y z"}):
        result = post(client, auth, [make_event(**identity), make_event(userId="trent")])
        assert result["accepted"] == 1 and [e["code"] for e in result["errors"]] == ["user_suppressed"]
    listed = client.get("/v1/suppressions", headers=auth).json()
    assert [s["user_id"] for s in listed["data"]] == ["mallory", "x/y z"]
    assert listed["data"][0]["erasure_id"] == response.json()["id"]
    lifted = client.delete("/v1/suppressions/" + quote("x/y z", safe=""), headers=auth)
    assert lifted.status_code == 204
    assert post(client, auth, [make_event(userId="x/y z")])["accepted"] == 1
    assert client.delete("/v1/suppressions/" + quote("x/y z", safe=""), headers=auth).status_code == 404
    assert stored_ids(db, project, user="mallory") == set()


def test_suppression_holds_on_every_process_and_no_racing_event_survives(database_url, project, db):
    """Server one answers the 202; server two gets the ids' events throughout. Within 2 s server
    two refuses them, and when the job is done none of those it accepted before is left."""
    first, base1 = start_server(database_url)
    second, base2 = start_server(database_url)
    try:
        auth = auth_headers(project)
        with httpx.Client(base_url=base1, headers=auth) as one, httpx.Client(base_url=base2, headers=auth) as two:
            assert two.post("/v1/batch", json={"batch": [make_event(userId="oscar")]}).json()["accepted"] == 1
            job = one.post("/v1/erasures", json={"users": ["oscar"], "suppress": True}).json()
            sent_at = time.monotonic()
            refused_after = None
            while time.monotonic() - sent_at < 3:
                result = two.post("/v1/batch", json={"batch": [make_event(userId="oscar")]}).json()
                if result["errors"] and refused_after is None:
                    refused_after = time.monotonic() - sent_at
                if refused_after is not None:
                    assert result["errors"][0]["code"] == "user_suppressed"
            assert refused_after is not None and refused_after < 2.0
            done = wait_done(one, {}, job["id"])
        assert done["status"] == "done" and done["events_erased"] >= 1
        assert stored_ids(db, project, user="oscar") == set()
        assert_counts_match_events(db, project)
    finally:
        stop_server(first)
        stop_server(second)


# --- jobs that crash or fail -------------------------------------------------------------------


def test_a_job_interrupted_by_a_killed_server_resumes_and_finishes(create_database):
    url = create_database()
    project = "p_resume"
    with psycopg.connect(url, autocommit=True) as db:
        # Every removal step takes 0.3 s longer: the job is caught half done.
        db.execute("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$")
        db.execute("CREATE TRIGGER slow AFTER DELETE ON events FOR EACH STATEMENT EXECUTE FUNCTION slow()")
        proc, base = start_server(url)
        auth = auth_headers(project)
        with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
            for _ in range(12):
                batch = [make_event(userId="victor", timestamp=ago(minutes=i)) for i in range(1000)]
                assert http.post("/v1/batch", json={"batch": batch}).json()["accepted"] == 1000
            http.post("/v1/batch", json={"batch": [make_event(userId="walter")]})
            job = http.post("/v1/erasures", json={"users": ["victor"]}).json()["id"]
            wait_for(lambda: http.get(f"/v1/erasures/{job}").json()["events_erased"] > 0, 20, "the first step")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        state = db.execute("SELECT status, events_erased FROM erasures WHERE id = %s", [job]).fetchone()
        assert state[0] in ("pending", "running") and 0 < state[1] < 12000
        proc, base = start_server(url)
        try:
            with httpx.Client(base_url=base, headers=auth, timeout=30) as http:
                done = wait_done(http, {}, job, timeout=60)
            assert done["status"] == "done" and done["events_erased"] == 12000
            assert stored_ids(db, project, user="victor") == set() and len(stored_ids(db, project)) == 1
            assert_counts_match_events(db, project)
        finally:
            stop_server(proc)


def test_a_job_that_keeps_failing_says_why(create_database, fast_jobs):
    url = create_database()
    project = "p_failing"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'events are on legal hold'; END $$")
        db.execute("CREATE TRIGGER refuse BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION refuse()")
        with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as app:
            auth = auth_headers(project)
            post(app, auth, [make_event(userId="yvonne")])
            job = app.post("/v1/erasures", json={"users": ["yvonne"]}, headers=auth).json()["id"]
            state = wait_done(app, auth, job, timeout=15)
            metrics = app.get("/metrics").text
        assert state["status"] == "failed" and "legal hold" in state["error"] and state["finished_at"]
        assert 'tally_erasures_total{outcome="failed"}' in metrics
        assert len(stored_ids(db, project)) == 1
        assert_counts_match_events(db, project)


def test_an_erasure_is_logged_with_who_asked_and_counted_but_no_ids(fast_app, project, caplog):
    token = token_for(project, sub="dpo@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    with caplog.at_level(logging.INFO, logger="tally.lifecycle"):
        job = fast_app.post("/v1/erasures", json={"users": ["zed-" + uuid.uuid4().hex]}, headers=headers).json()
        assert job["requested_by"] == "dpo@example.com"
        wait_done(fast_app, headers, job["id"])
    metrics = fast_app.get("/metrics").text
    assert 'tally_erasures_total{outcome="requested"}' in metrics
    lines = [orjson.loads(JSONFormatter().format(r)) for r in caplog.records if getattr(r, "erasure", None) == job["id"]]
    # The job may be finished by another process's runner on the same database: its "erasure
    # done" line is then in that process's log, not here.
    assert lines[0]["message"] == "erasure requested" and lines[0]["requested_by"] == "dpo@example.com"
    assert lines[0]["user_count"] == 1
    assert all(line["requested_by"] == "dpo@example.com" for line in lines)
    assert all(job["users"][0] not in str(line) for line in lines)


def test_a_lifecycle_statement_never_leaves_a_batch_half_applied(create_database):
    """Nothing half-applied: the decrements of a removal step commit with it or not at all."""
    url = create_database()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("ALTER TABLE event_count_deltas ADD CONSTRAINT no_decrements CHECK (n > 0)")
        with TestClient(create_app(make_settings(url)), raise_server_exceptions=False) as app:
            auth = auth_headers("p_half")
            post(app, auth, [make_event(userId="quinn") for _ in range(3)])
            job = app.post("/v1/erasures", json={"users": ["quinn"]}, headers=auth).json()["id"]
            time.sleep(2)
            assert len(stored_ids(db, "p_half", user="quinn")) == 3
            db.execute("ALTER TABLE event_count_deltas DROP CONSTRAINT no_decrements")
            assert wait_done(app, auth, job)["events_erased"] == 3
        assert_counts_match_events(db, "p_half")

