"""Failure and concurrency: 503 with nothing half-stored, and exactly once under concurrent retries."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from shared import counts
from shared.db import create_pool
from tally.app import create_app
from tests.factories import assert_counts_match_events, auth_headers, fold_counts, make_event
from tests.helpers import free_port, make_settings, start_server, stop_server


def event_ids(db, project: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT message_id FROM events WHERE project_id = %s", [project])]


# --- database failures ------------------------------------------------------------------------


def test_unreachable_database_is_503_with_retry_after_not_a_hang(auth):
    settings = make_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    with TestClient(create_app(settings), raise_server_exceptions=False) as down:
        started = time.monotonic()
        response = down.post("/v1/batch", json={"batch": [make_event()]}, headers=auth)
        assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
    assert int(response.headers["retry-after"]) >= 1


# Every test here runs against both forms of the write (ingest/sql.py): the one statement of a
# single Postgres, and the two statements in one transaction of TALLY_CITUS.
@pytest.fixture(scope="module", params=[False, True], ids=["one-statement", "citus-form"])
def citus(request) -> bool:
    return request.param


@pytest.fixture(scope="module")
def impatient(database_url, citus) -> Iterator[TestClient]:
    """An app whose statements are cancelled after 300 ms (its lock waits after 150 ms)."""
    with TestClient(create_app(make_settings(database_url, db_statement_timeout_ms=300, citus=citus)),
                    raise_server_exceptions=False) as app:
        yield app


def hold_row(db, project: str, message_id: str) -> None:
    """Insert, uncommitted, the event another request will then wait on."""
    db.execute(
        "INSERT INTO events (project_id, message_id, type, event, ts, received_at) "
        "VALUES (%s, %s, 'track', 'held', now(), now())", [project, message_id],
    )


@pytest.mark.parametrize("key", [None, "retry-me"], ids=["plain", "idempotency-key"])
def test_statement_cancelled_by_the_database_is_503_and_stores_nothing(impatient, db, project, key):
    batch = [make_event(), make_event(messageId="contended"), make_event()]
    headers = {**auth_headers(project), **({"Idempotency-Key": key} if key else {})}
    with db.transaction(force_rollback=True):
        hold_row(db, project, "contended")
        started = time.monotonic()
        response = impatient.post("/v1/batch", json={"batch": batch}, headers=headers)
        assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert response.headers["retry-after"]
    # Neither the other events, nor their counts, nor the Idempotency-Key response were kept.
    assert event_ids(db, project) == []
    fold_counts(db)
    assert db.execute("SELECT count(*) FROM event_counts_hourly WHERE project_id = %s", [project]).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM idempotency_keys WHERE project_id = %s", [project]).fetchone()[0] == 0
    retry = impatient.post("/v1/batch", json={"batch": batch}, headers=headers)
    assert retry.status_code == 200 and retry.json()["accepted"] == 3
    assert "idempotent-replayed" not in retry.headers


@pytest.mark.parametrize("key", [None, "retry-me"], ids=["plain", "idempotency-key"])
def test_counts_that_cannot_be_stored_take_their_events_with_them(create_database, citus, key):
    """The events and their count increments commit together: when the increments fail, the
    batch's events are not kept either (and a resend after the fault stores them, once)."""
    url = create_database()
    project = "p_atomic"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("ALTER TABLE event_count_deltas ADD CONSTRAINT refuse_boom CHECK (event <> 'boom')")
        batch = [make_event(event="fine"), make_event(event="boom")]
        headers = {**auth_headers(project), **({"Idempotency-Key": key} if key else {})}
        with TestClient(create_app(make_settings(url, citus=citus)), raise_server_exceptions=False) as app:
            assert app.post("/v1/batch", json={"batch": batch}, headers=headers).status_code >= 500
            assert event_ids(db, project) == []
            assert db.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0
            db.execute("ALTER TABLE event_count_deltas DROP CONSTRAINT refuse_boom")
            retry = app.post("/v1/batch", json={"batch": batch}, headers=headers)
            assert retry.status_code == 200 and retry.json()["accepted"] == 2
            again = app.post("/v1/batch", json={"batch": batch}, headers=auth_headers(project))
            assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 2
        assert_counts_match_events(db, project)


# --- concurrency against real processes -----------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(database_url, citus) -> Iterator[str]:
    proc, base = start_server(database_url, env={"TALLY_CITUS": str(citus).lower()})
    yield base
    stop_server(proc)


def post_concurrently(base: str | list[str], bodies: list[dict], headers: dict) -> list[httpx.Response]:
    """Each body on its own connection, all released at once; with several servers, round robin."""
    bases = [base] if isinstance(base, str) else base
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response | None] = [None] * len(bodies)

    def send(i: int) -> None:
        with httpx.Client(base_url=bases[i % len(bases)], timeout=30) as http:
            http.get("/healthz")  # connect first, so the barrier releases requests, not handshakes
            barrier.wait()
            responses[i] = http.post("/v1/batch", json=bodies[i], headers=headers)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return responses  # type: ignore[return-value]


def test_same_batch_on_32_connections_is_stored_exactly_once(live_server, db, project):
    batch = {"batch": [make_event(event=f"E{i % 4}") for i in range(50)]}
    responses = post_concurrently(live_server, [batch] * 32, auth_headers(project))
    assert [r.status_code for r in responses] == [200] * 32
    results = [r.json() for r in responses]
    assert sum(r["accepted"] for r in results) == 50
    assert sum(r["duplicates"] for r in results) == 50 * 31
    assert all(r["rejected"] == 0 for r in results)
    ids = event_ids(db, project)
    assert sorted(ids) == sorted(e["messageId"] for e in batch["batch"])
    assert_counts_match_events(db, project)


@pytest.fixture
def second_server(database_url, citus) -> Iterator[str]:
    """Another `tally serve` process on the same database, beside live_server."""
    proc, base = start_server(database_url, env={"TALLY_CITUS": str(citus).lower()})
    yield base
    stop_server(proc)


def test_overlapping_batches_from_two_processes_in_different_orders_never_5xx_or_deadlock(
    live_server, second_server, db, project
):
    pool = [make_event(event=f"E{i % 5}", timestamp=f"2026-11-26T{i % 3 + 10}:00:00Z") for i in range(16 * 25 + 25)]
    rng = random.Random(7)
    bodies = []
    for i in range(16):
        window = pool[i * 25 : i * 25 + 50]  # half shared with the batch before, half with the one after
        bodies.append({"batch": rng.sample(window, len(window))})
    # Alternate batches go to two server processes: neighbours share messageIds across processes.
    responses = post_concurrently([live_server, second_server], bodies, auth_headers(project))
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses if r.status_code != 200]
    assert sum(r.json()["accepted"] for r in responses) == len(pool)
    assert sum(r.json()["duplicates"] for r in responses) == 16 * 50 - len(pool)
    assert len(event_ids(db, project)) == len(pool)
    assert_counts_match_events(db, project)


def test_same_idempotency_key_on_many_connections_stores_once(live_server, db, project):
    batch = {"batch": [make_event() for _ in range(20)]}
    headers = {**auth_headers(project), "Idempotency-Key": "burst"}
    responses = post_concurrently(live_server, [batch] * 12, headers)
    assert {r.status_code for r in responses} <= {200, 409}
    fresh = [r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1 and fresh[0].json()["accepted"] == 20
    replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    assert all(r.content == fresh[0].content for r in replays)
    assert len(event_ids(db, project)) == 20


def test_a_fold_moves_at_most_its_limit_so_a_backlog_drains_in_bounded_steps(create_database):
    url = create_database()  # a database no server folds behind the test's back
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO event_count_deltas (project_id, bucket, event, n) "
            "SELECT 'p', timestamptz '2026-01-01 00:00Z' + (i % 3) * interval '1 hour', 'E', 1 "
            "FROM generate_series(1, 25) AS i"
        )

    async def rounds() -> list[int | None]:
        pool = create_pool(make_settings(url))
        await pool.open()
        try:
            return [await counts.fold_counts(pool, limit=10) for _ in range(4)]
        finally:
            await pool.close()

    moved = asyncio.run(rounds())
    with psycopg.connect(url, autocommit=True) as conn:
        hourly = conn.execute("SELECT n FROM event_counts_hourly WHERE project_id = 'p' ORDER BY bucket").fetchall()
        daily = conn.execute("SELECT n FROM event_counts_daily WHERE project_id = 'p'").fetchall()
        left = conn.execute("SELECT count(*) FROM event_count_deltas").fetchone()[0]
    # Whole hours of at most 10 rows a round (8, 9, 8 in the three hours), oldest first.
    assert moved == [8, 9, 8, 0] and left == 0
    assert [n for (n,) in hourly] == [8, 9, 8]
    assert daily == [(25,)]


def test_an_hour_with_more_deltas_than_the_limit_is_folded_whole(create_database):
    url = create_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO event_count_deltas (project_id, bucket, event, n) "
                     "SELECT 'p', timestamptz '2026-01-01 00:00Z', 'E', 1 FROM generate_series(1, 30)")

    async def fold() -> int | None:
        pool = create_pool(make_settings(url))
        await pool.open()
        try:
            return await counts.fold_counts(pool, limit=10)
        finally:
            await pool.close()

    assert asyncio.run(fold()) == 30
