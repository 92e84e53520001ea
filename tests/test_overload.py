"""Overload and slow clients: bounded waits, 503 + Retry-After, nothing accepted lost.

A real `tally serve` with a pool of ONE connection: the pool is exhausted by a request that the
test blocks on a row lock it holds, so what the other requests get is exactly "no connection
within the pool timeout". Statement and lock timeouts are covered for the query side here
(the ingest side is in test_ingest_durability.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import assert_counts_match_events, auth_headers, make_event
from tests.helpers import start_server, stop_server

POOL_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def one_connection(database_url) -> Iterator[str]:
    """A server whose pool holds one connection; a lock wait may last 5 s (statement timeout 10 s)."""
    proc, base = start_server(database_url, env={
        "TALLY_DB_POOL_SIZE": "1", "TALLY_DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
        "TALLY_DB_STATEMENT_TIMEOUT_MS": "10000",
        "TALLY_INGEST_WRITERS": "100",  # the pool, not the writer cap, is what runs out here
    })
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def one_writer(database_url) -> Iterator[str]:
    """A server that runs one ingest statement at a time, with a pool of ten."""
    proc, base = start_server(database_url, env={
        "TALLY_INGEST_WRITERS": "1", "TALLY_DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
        "TALLY_DB_STATEMENT_TIMEOUT_MS": "10000",
    })
    yield base
    stop_server(proc)


def stored(db, project: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT message_id FROM events WHERE project_id = %s", [project])}


def post(base: str, batch: list[dict], headers: dict, out: list, index: int) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=30) as http:
        response = http.post("/v1/batch", json={"batch": batch}, headers=headers)
    out[index] = (response, time.monotonic() - started)


def hold_the_only_connection(base: str, db, project: str, batch: list[dict], headers: dict) -> tuple[threading.Thread, list]:
    """Inside db's open transaction, lock the row messageId 'contended' and send `batch` (which
    holds it); return once that request waits on the lock, holding the pool's one connection."""
    db.execute(
        "INSERT INTO events (project_id, message_id, type, event, ts, received_at) "
        "VALUES (%s, 'contended', 'track', 'held', now(), now())", [project],
    )
    first: list = [None]
    holding = threading.Thread(target=post, args=(base, batch, headers, first, 0))
    holding.start()
    deadline = time.monotonic() + 10
    while not db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'tally' AND wait_event_type = 'Lock'"
    ).fetchone()[0]:
        assert time.monotonic() < deadline, "the first request never reached the lock"
        time.sleep(0.05)
    return holding, first


def send_while_held(base: str, db, project: str, others: list[list[dict]], during=None) -> tuple[list, list, list]:
    """Hold the request of `holder` on a row lock, send `others` meanwhile, then release it.
    Returns (holder, first's result, others' results); `during` runs while the lock is held."""
    headers = auth_headers(project)
    holder = [make_event(messageId="contended"), make_event()]
    with db.transaction(force_rollback=True):
        holding, first = hold_the_only_connection(base, db, project, holder, headers)
        results: list = [None] * len(others)
        threads = [threading.Thread(target=post, args=(base, b, headers, results, i)) for i, b in enumerate(others)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if during is not None:
            during()
        # The transaction ends here (rolled back): the first request's insert proceeds.
    holding.join(30)
    return holder, first, results


def assert_refused_in_time_then_stored_on_retry(base, db, project, holder, first, others, results, code) -> None:
    for response, seconds in results:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
        assert int(response.headers["retry-after"]) >= 1
        assert POOL_TIMEOUT * 0.9 <= seconds < POOL_TIMEOUT + 4  # waited its turn, then gave up
    response, _ = first[0]
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text
    # Exactly what was acknowledged is stored; the refused batches left nothing behind.
    assert stored(db, project) == {e["messageId"] for e in holder}
    # And a client that retries them after the Retry-After gets them stored.
    with httpx.Client(base_url=base, timeout=30) as http:
        for batch in others:
            assert http.post("/v1/batch", json={"batch": batch}, headers=auth_headers(project)).status_code == 200
    assert stored(db, project) == {e["messageId"] for b in [holder, *others] for e in b}
    assert_counts_match_events(db, project)


def test_exhausted_pool_answers_503_with_retry_after_within_the_pool_timeout_and_loses_nothing(
    one_connection, db, project
):
    others = [[make_event(), make_event()] for _ in range(8)]
    holder, first, results = send_while_held(one_connection, db, project, others)
    assert_refused_in_time_then_stored_on_retry(
        one_connection, db, project, holder, first, others, results, "database_unavailable"
    )


def test_requests_past_the_writer_cap_wait_their_turn_then_get_503_and_lose_nothing(one_writer, db, project):
    def queries_still_served() -> None:  # ingest's cap leaves the pool's other connections free
        response = httpx.get(one_writer + "/v1/events?limit=1", headers=auth_headers(project), timeout=10)
        assert response.status_code == 200

    others = [[make_event()] for _ in range(3)]
    holder, first, results = send_while_held(one_writer, db, project, others, during=queries_still_served)
    assert_refused_in_time_then_stored_on_retry(one_writer, db, project, holder, first, others, results, "overloaded")


def test_waiting_queue_is_bounded_so_excess_requests_are_refused_at_once(one_connection, db, project):
    """Past 50 waiters per pooled connection, a request is answered 503 without waiting its turn."""
    headers = auth_headers(project)
    # Connected before the pool is held (setting up 70 clients takes seconds on a busy machine,
    # and the held request gives up after the 5 s lock timeout), so the requests arrive together.
    clients = [httpx.Client(base_url=one_connection, timeout=30) for _ in range(70)]
    for http in clients:
        http.get("/healthz")
    with db.transaction(force_rollback=True):
        holding, first = hold_the_only_connection(
            one_connection, db, project, [make_event(messageId="contended")], headers
        )
        barrier = threading.Barrier(len(clients))
        results: list = [None] * len(clients)

        def send(i: int) -> None:
            barrier.wait()
            started = time.monotonic()
            response = clients[i].post("/v1/batch", json={"batch": [make_event()]}, headers=headers)
            results[i] = (response.status_code, response.headers.get("retry-after"), time.monotonic() - started)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for http in clients:
            http.close()
    holding.join(30)
    assert first[0][0].status_code == 200, "the held request must outlive the burst, or the pool was free"
    assert all(status == 503 and retry_after for status, retry_after, _ in results), results
    at_once = [seconds for _, _, seconds in results if seconds < POOL_TIMEOUT * 0.5]
    assert at_once, "no request was refused before the pool timeout: the queue is unbounded"
    print(f"\n70 requests on a held pool of 1: {len(at_once)} refused at once, the rest after ~{POOL_TIMEOUT} s")
    assert stored(db, project) == {"contended"}


def pool_in_use(base: str) -> float:
    for family in text_string_to_metric_families(httpx.get(base + "/metrics").text):
        for sample in family.samples:
            if sample.name == "tally_db_pool_connections_in_use":
                return sample.value
    raise AssertionError("no tally_db_pool_connections_in_use gauge")


def test_stalled_uploads_hold_no_database_connection(one_connection, db, project):
    url = urlsplit(one_connection)
    body = json.dumps({"batch": [make_event()]}).encode()
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth_headers(project)['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    stalled = []
    try:
        for _ in range(5):  # five clients send their headers and half their body, then stall
            sock = socket.create_connection((url.hostname, url.port), timeout=10)
            sock.sendall(head + body[: len(body) // 2])
            stalled.append(sock)
        time.sleep(1.5)  # past the pool timeout, and past one sample of the pool gauge
        # Sampled each second; the revocation refresh borrows the connection for a moment each
        # second too, so look for a zero among a few samples (held by an upload, it would stay 1).
        readings = []
        for _ in range(4):
            readings.append(pool_in_use(one_connection))
            time.sleep(0.6)
        assert 0 in readings, readings
        # With a pool of one, this could only succeed if no stalled upload held the connection.
        good = make_event()
        started = time.monotonic()
        response = httpx.post(one_connection + "/v1/batch", json={"batch": [good]}, headers=auth_headers(project), timeout=30)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < POOL_TIMEOUT + 4
        assert stored(db, project) == {good["messageId"]}
    finally:
        for sock in stalled:
            sock.close()


# --- statement and lock timeouts on the query side ---------------------------------------------------


@pytest.fixture(scope="module")
def impatient(database_url) -> Iterator[str]:
    """A server whose statements are cancelled after 300 ms, lock waits after 150 ms."""
    proc, base = start_server(database_url, env={"TALLY_DB_STATEMENT_TIMEOUT_MS": "300"})
    yield base
    stop_server(proc)


QUERIES = {
    "aggregates-day": "/v1/aggregates?interval=day&from=2026-11-20T00:00:00Z&to=2026-11-27T00:00:00Z",
    "aggregates-hour-unique": "/v1/aggregates?interval=hour&metrics=count,unique_users"
                              "&from=2026-11-26T00:00:00Z&to=2026-11-27T00:00:00Z",
    "events": "/v1/events",
    "event-by-id": "/v1/events/some-id",
}


@pytest.mark.parametrize("path", QUERIES.values(), ids=QUERIES.keys())
def test_query_blocked_past_the_session_timeouts_is_503_then_the_pool_serves_again(impatient, database_url, project, path):
    import psycopg

    headers = auth_headers(project, "ingest query")
    assert httpx.post(impatient + "/v1/batch", json={"batch": [make_event(messageId="some-id")]}, headers=headers).status_code == 200
    with psycopg.connect(database_url) as locker:
        # ACCESS EXCLUSIVE blocks every reader of these tables until the transaction ends.
        locker.execute("LOCK TABLE events, event_counts_hourly, event_counts_daily IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = httpx.get(impatient + path, headers=headers, timeout=30)
        seconds = time.monotonic() - started
        locker.rollback()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"]
    assert seconds < 5
    # The cancelled statement did not poison the pooled connection: the same query now answers.
    assert httpx.get(impatient + path, headers=headers, timeout=30).status_code == 200


@pytest.fixture
def hasty(database_url) -> Iterator[str]:
    """A server whose statements are cancelled after 100 ms, the least the settings allow."""
    proc, base = start_server(database_url, env={"TALLY_DB_STATEMENT_TIMEOUT_MS": "100"})
    yield base
    stop_server(proc)


def test_a_statement_running_past_the_statement_timeout_is_503_then_the_pool_serves_again(hasty, db, project):
    # No lock this time: the statement itself is too long. Exact distinct users over half a
    # million events of one name takes seconds, not the server's 100 ms.
    db.execute(
        "INSERT INTO events (project_id, message_id, type, event, user_id, ts, received_at) "
        "SELECT %s, 'm' || i, 'track', 'Big', 'u' || (i %% 200000), "
        "timestamptz '2026-11-26 00:00Z' + i * interval '100 ms', now() "
        "FROM generate_series(1, 500000) AS i", [project],
    )
    db.execute(  # their counts, as ingest would have appended them
        "INSERT INTO event_count_deltas (project_id, bucket, event, n) "
        "SELECT project_id, date_trunc('hour', ts, 'UTC'), event, count(*) FROM events "
        "WHERE project_id = %s GROUP BY 1, 2, 3", [project],
    )
    headers = auth_headers(project, "query")
    slow = "/v1/aggregates?interval=total&metrics=count,unique_users&from=2026-11-26T00:00:00Z&to=2026-11-27T00:00:00Z"
    started = time.monotonic()
    response = httpx.get(hasty + slow, headers=headers, timeout=30)
    seconds = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["retry-after"]
    assert seconds < 5
    # The cancelled statement left the pooled connection usable: a cheap query answers.
    fast = "/v1/events?limit=1"
    assert httpx.get(hasty + fast, headers=headers, timeout=30).status_code == 200


def rss_mib(base: str) -> float:
    """Resident memory of the server process listening on `base`, in MiB."""
    port = int(base.rsplit(":", 1)[1])
    for proc in psutil.process_iter(["pid"]):
        try:
            if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in proc.net_connections("tcp")):
                return proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    raise AssertionError(f"no process listens on {base}")


@pytest.fixture
def capped(database_url) -> Iterator[str]:
    """One pooled connection and at most 4 ingest requests in progress."""
    proc, base = start_server(database_url, env={
        "TALLY_DB_POOL_SIZE": "1", "TALLY_DB_POOL_TIMEOUT": "3", "TALLY_MAX_INFLIGHT_REQUESTS": "4",
        "TALLY_DB_STATEMENT_TIMEOUT_MS": "10000",
    })
    yield base
    stop_server(proc)


def test_requests_past_the_in_progress_cap_are_refused_before_their_body_so_memory_stays_bounded(capped, db, project):
    headers = auth_headers(project)
    # 40 bodies of ~0.9 MB (1000 events each) against a pool held by a lock: without the cap each
    # would be held, parsed, while it waits; with it, 4 wait and the rest are refused at once.
    big = json.dumps({"batch": [make_event(properties={"pad": "x" * 800}) for _ in range(1000)]}).encode()
    clients = [httpx.Client(base_url=capped, timeout=30) for _ in range(40)]
    for http in clients:
        http.get("/healthz")
    before = rss_mib(capped)
    results: list = [None] * len(clients)
    with db.transaction(force_rollback=True):
        db.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        barrier = threading.Barrier(len(clients))

        def send(i: int) -> None:
            barrier.wait()
            started = time.monotonic()
            response = clients[i].post(
                "/v1/batch", content=big, headers={**headers, "Content-Type": "application/json"}
            )
            results[i] = (response.status_code, response.headers.get("content-type"),
                          response.headers.get("retry-after"), response.json().get("code"),
                          time.monotonic() - started)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        peak = rss_mib(capped)
    for http in clients:
        http.close()
    refused = [r for r in results if r[3] == "overloaded"]
    assert len(refused) >= len(clients) - 4 - 4, results  # a few may arrive after a slot frees
    assert all(r[0] == 503 and r[1] == "application/problem+json" and r[2] for r in refused)
    assert all(r[0] == 503 for r in results), results  # the admitted ones hit the held pool
    print(f"\n40 bodies of {len(big) / 2**20:.1f} MiB at a cap of 4: {len(refused)} refused at once; "
          f"RSS {before:.0f} -> {peak:.0f} MiB")
    assert peak - before < 100, (before, peak)
    assert stored(db, project) == set()
