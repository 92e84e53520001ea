"""The tracking plan at ingest: enforce rejects the event alone, flag stores it marked and listable,
and a change to the plan reaches every worker of another process within 2 s."""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import httpx
import psutil
import pytest

from ingest.service import MAX_VIOLATION_LABELS, IngestMetrics, IngestServices
from shared.metrics import Metrics
from tests.factories import assert_counts_match_events, auth_headers, make_event
from tests.helpers import start_server, stop_server
from tests.test_revocation import one_connection_per_worker

WITHIN = 2.0  # the contract

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order_id", "total", "currency"],
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "total": {"type": "number", "minimum": 0},
        "currency": {"enum": ["USD", "EUR", "GBP"]},
        "email": {"type": "string", "format": "email"},
    },
}
GOOD = {"order_id": "o-1", "total": 12.5, "currency": "EUR", "email": "a@example.com"}


def put_schema(client, auth, event: str, mode: str, schema: dict = ORDER_SCHEMA) -> None:
    response = client.post("/v1/schemas", json={"event": event, "schema": schema, "mode": mode}, headers=auth)
    assert response.status_code == 201, response.text


def reload_plan(client) -> None:
    """Reload the in-process app's plan now instead of waiting for its next second."""
    services = client.app.state.services
    client.portal.call(services.role(IngestServices).plan.refresh, services.pool, 2.0)


def post(client, auth, events: list[dict]) -> dict:
    response = client.post("/v1/batch", json={"batch": events}, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def stored_ids(db, project: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT message_id FROM events WHERE project_id = %s", [project])}


def test_enforce_rejects_violating_events_alone_with_pointer_and_rule(client, auth, db, project):
    put_schema(client, auth, "Order Completed", "enforce")
    reload_plan(client)
    good = make_event(properties=GOOD)
    negative = make_event(properties={**GOOD, "total": -1})
    bad_enum = make_event(properties={**GOOD, "currency": "XXX"})
    bad_format = make_event(properties={**GOOD, "email": "not-an-email"})
    no_properties = make_event(properties=None)
    other_name = make_event(event="Signed Up", properties={"total": -1})  # no schema for this name
    not_track = make_event(type="identify", event=None, traits={"total": -1})
    body = post(client, auth, [good, negative, bad_enum, bad_format, no_properties, other_name, not_track])

    assert body["accepted"] == 3 and body["rejected"] == 4 and body["duplicates"] == 0
    errors = {e["index"]: e for e in body["errors"]}
    assert set(errors) == {1, 2, 3, 4}
    assert all(e["code"] == "schema_violation" for e in errors.values())
    assert errors[1]["messageId"] == negative["messageId"]
    assert "/properties/total:" in errors[1]["detail"] and "rule /properties/total/minimum" in errors[1]["detail"]
    assert "/properties/currency:" in errors[2]["detail"] and "rule /properties/currency/enum" in errors[2]["detail"]
    assert "/properties/email:" in errors[3]["detail"] and "rule /properties/email/format" in errors[3]["detail"]
    # No properties is checked as {}: every required field is missing.
    assert "rule /required" in errors[4]["detail"] and "2 more" in errors[4]["detail"]
    assert "'Order Completed'" in errors[1]["detail"]
    assert stored_ids(db, project) == {good["messageId"], other_name["messageId"], not_track["messageId"]}
    assert_counts_match_events(db, project)


def test_rejected_event_can_be_sent_again_fixed_under_the_same_message_id(client, auth, db, project):
    put_schema(client, auth, "Order Completed", "enforce")
    reload_plan(client)
    event = make_event(properties={**GOOD, "total": -1})
    assert post(client, auth, [event])["rejected"] == 1
    fixed = {**event, "properties": GOOD}
    assert post(client, auth, [fixed])["accepted"] == 1
    assert stored_ids(db, project) == {event["messageId"]}


def test_flag_stores_violating_events_marked_and_lists_them(client, auth, db, project):
    put_schema(client, auth, "Order Completed", "flag")
    reload_plan(client)
    good = [make_event(properties=GOOD) for _ in range(3)]
    bad = [make_event(properties={**GOOD, "total": -i - 1}) for i in range(5)]
    body = post(client, auth, good + bad)
    assert body == {"success": True, "accepted": 8, "duplicates": 0, "rejected": 0, "errors": []}

    flagged, cursor = [], None
    while True:  # pages of 2 under the filter: the cursor stays bound to it
        params = "violations=true&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/events?{params}", headers=auth).json()
        flagged += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(e["messageId"] for e in flagged) == sorted(e["messageId"] for e in bad)
    for item in flagged:
        assert item["violations"] == [{
            "pointer": "/properties/total",
            "rule": "/properties/total/minimum",
            "message": f"{item['properties']['total']} is less than the minimum of 0",
        }]
        assert item["properties"]["total"] < 0  # stored exactly as sent
    clean = client.get("/v1/events?violations=false", headers=auth).json()["data"]
    assert sorted(e["messageId"] for e in clean) == sorted(e["messageId"] for e in good)
    assert all(e["violations"] is None for e in clean)
    # A cursor issued under one filter does not continue another.
    first = client.get("/v1/events?violations=true&limit=2", headers=auth).json()
    other = client.get(f"/v1/events?violations=false&limit=2&cursor={first['next_cursor']}", headers=auth)
    assert other.status_code == 400 and other.json()["code"] == "invalid_cursor"
    # Flagged events are counted like any other.
    assert_counts_match_events(db, project)


def test_a_flagged_event_exactly_at_the_size_limit_is_stored(client, auth, db, project):
    limit = client.app.state.services.settings.max_event_bytes
    # Before the plan exists: an oversized event tells its size as stored, so the padding that
    # makes it exactly `limit` bytes is known.
    probe = make_event(properties={**GOOD, "total": -1, "note": "x" * limit})
    detail = post(client, auth, [probe])["errors"][0]["detail"]
    assert detail.endswith(f"the limit is {limit}")
    over = int(detail.split(" bytes")[0].rsplit(" ", 1)[1]) - limit
    put_schema(client, auth, "Order Completed", "flag")
    reload_plan(client)
    event = make_event(properties={**GOOD, "total": -1, "note": "x" * (limit - over)})
    body = post(client, auth, [event])
    # The limit is on what the client sent; the violation notes stored beside it do not count.
    assert body["accepted"] == 1, body
    row = db.execute("SELECT violations FROM events WHERE project_id = %s AND message_id = %s",
                     [project, event["messageId"]]).fetchone()
    assert row[0][0]["rule"] == "/properties/total/minimum"


def test_the_plan_changes_with_the_schema_and_stays_in_its_project(client, auth, db, project):
    name = "Läufer / Ziel 🏁"
    put_schema(client, auth, name, "enforce", {"type": "object", "required": ["lap"]})
    reload_plan(client)
    elsewhere = auth_headers("p_" + uuid.uuid4().hex[:12])
    assert post(client, auth, [make_event(event=name, properties={})])["rejected"] == 1
    assert post(client, elsewhere, [make_event(event=name, properties={})])["accepted"] == 1

    path = f"/v1/schemas/{quote(name, safe='')}"
    etag = client.get(path, headers=auth).headers["etag"]
    replaced = client.put(path, json={"schema": {"type": "object"}, "mode": "enforce"},
                          headers={**auth, "If-Match": etag})
    assert replaced.status_code == 200, replaced.text
    reload_plan(client)
    assert post(client, auth, [make_event(event=name, properties={})])["accepted"] == 1

    assert client.delete(path, headers=auth).status_code == 204
    put_schema(client, auth, name, "flag", {"type": "object", "required": ["lap"]})
    reload_plan(client)
    event = make_event(event=name, properties={})
    assert post(client, auth, [event])["accepted"] == 1
    flagged = client.get("/v1/events?violations=true", headers=auth).json()["data"]
    assert [e["messageId"] for e in flagged] == [event["messageId"]]


def test_violation_metrics_count_by_event_and_mode(client, auth, project):
    event = "Metric Probe " + uuid.uuid4().hex[:8]
    put_schema(client, auth, event, "flag")
    put_schema(client, auth, event + " enforced", "enforce")
    reload_plan(client)
    before = client.get("/metrics").text
    post(client, auth, [make_event(event=event, properties={}) for _ in range(3)]
         + [make_event(event=event + " enforced", properties={}) for _ in range(2)]
         + [make_event(event=event, properties=GOOD)])
    after = client.get("/metrics").text

    def value(text: str, name: str, mode: str) -> float:
        line = f'tally_schema_violations_total{{event="{name}",mode="{mode}"}} '
        found = [float(row[len(line):]) for row in text.splitlines() if row.startswith(line)]
        return found[0] if found else 0.0

    labelled = value(after, event, "flag") + value(after, "other", "flag")
    assert labelled - value(before, event, "flag") - value(before, "other", "flag") == 3
    enforced = value(after, event + " enforced", "enforce") + value(after, "other", "enforce")
    assert enforced - value(before, event + " enforced", "enforce") - value(before, "other", "enforce") == 2


def test_violation_metric_labels_are_capped(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = IngestMetrics(Metrics())
    for i in range(MAX_VIOLATION_LABELS + 25):
        metrics.violation(f"event {i}", "flag")
    metrics.violation("event 0", "flag")  # a name already labelled keeps its label
    samples = {s.labels["event"]: s.value for s in metrics.violations.collect()[0].samples if s.name.endswith("_total")}
    assert len(samples) == MAX_VIOLATION_LABELS + 1
    assert samples["other"] == 25 and samples["event 0"] == 2


@pytest.fixture(scope="module")
def two_workers(database_url):
    proc, base = start_server(database_url, "--workers", "2")
    yield base, psutil.Process(proc.pid)
    stop_server(proc)


def seconds_until(clients: dict[int, httpx.Client], headers: dict, event: str, code: str | None, since: float) -> dict:
    """Per worker, seconds from `since` until an event of that name gets `code` (None: accepted)."""
    reached: dict[int, float] = {}
    while len(reached) < len(clients) and time.monotonic() - since < 10:
        for pid, worker in clients.items():
            if pid in reached:
                continue
            body = worker.post("/v1/batch", headers=headers,
                               json={"batch": [make_event(event=event, properties={})]}).json()
            if (body["errors"][0]["code"] if body["errors"] else None) == code:
                reached[pid] = round(time.monotonic() - since, 3)
        time.sleep(0.05)
    return reached


def test_a_plan_change_reaches_every_worker_of_another_process_within_2_s(two_workers, client, capsys):
    base, server = two_workers
    project = "p_" + uuid.uuid4().hex[:12]
    auth = auth_headers(project)
    workers = one_connection_per_worker(base, server, auth)
    try:
        # Written through this test process's app, a different process from the server.
        put_schema(client, auth, "Checkout", "enforce", {"type": "object", "required": ["cart"]})
        since = time.monotonic()
        enforced = seconds_until(workers, auth, "Checkout", "schema_violation", since)
        assert set(enforced) == set(workers) and max(enforced.values()) < WITHIN, enforced

        assert client.delete("/v1/schemas/Checkout", headers=auth).status_code == 204
        since = time.monotonic()
        lifted = seconds_until(workers, auth, "Checkout", None, since)
        assert set(lifted) == set(workers) and max(lifted.values()) < WITHIN, lifted
        with capsys.disabled():
            print(f"\nplan change applied after (s, per worker pid): created {enforced}, deleted {lifted}")
    finally:
        for worker in workers.values():
            worker.close()
