"""The ingest contract over HTTP against real Postgres: endpoints, event rules, storage, dedup, counts."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.factories import assert_counts_match_events, auth_headers, make_batch, make_event

SINGLE_TYPES = ("track", "identify", "page", "screen", "group", "alias")


def stored(db, project: str) -> dict[str, dict]:
    cur = db.execute("SELECT * FROM events WHERE project_id = %s", [project])
    names = [c.name for c in cur.description]
    return {row[0]["message_id"]: row[0] for row in ([dict(zip(names, r))] for r in cur.fetchall())}


def codes(response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


# --- endpoints and response shape -------------------------------------------------------------


def test_batch_stores_every_field_and_answers_counts(client, auth, db, project):
    event = make_event(properties={"plan": "pro", "n": 3}, traits={"email": "a@b.c"}, integrations={"All": True})
    write_key = auth["Authorization"].split(" ", 1)[1]  # the same token in the body, as Segment's SDKs send it
    response = client.post("/v1/batch", json={"batch": [event], "writeKey": write_key, "library": "x"}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}
    row = stored(db, project)[event["messageId"]]
    assert (row["type"], row["event"], row["user_id"]) == ("track", "Order Completed", "user-1")
    assert row["properties"] == {"plan": "pro", "n": 3}
    assert row["traits"] == {"email": "a@b.c"}
    assert row["context"] == event["context"]
    # A field without a column is kept, not dropped.
    assert row["extra"] == {"integrations": {"All": True}}
    assert row["ts"] == row["original_timestamp"] == datetime(2026, 11, 26, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("kind", SINGLE_TYPES)
def test_single_event_endpoint_implies_type_and_answers_like_batch(client, auth, db, project, kind):
    event = make_event(type=None, event="Signed Up" if kind == "track" else None, sentAt=iso(datetime.now(timezone.utc)))
    response = client.post(f"/v1/{kind}", json=event, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}
    row = stored(db, project)[event["messageId"]]
    assert row["type"] == kind
    assert row["event"] == ("Signed Up" if kind == "track" else "$" + kind)
    assert row["sent_at"] is not None and row["extra"] is None  # sentAt belongs to the request


def test_single_event_endpoint_rejects_a_conflicting_type(client, auth, db, project):
    response = client.post("/v1/identify", json=make_event(type="track"), headers=auth)
    assert response.status_code == 200
    assert response.json()["rejected"] == 1 and codes(response) == ["invalid_type"]
    assert stored(db, project) == {}


def test_alias_keeps_previous_id_and_non_track_event_key(client, auth, db, project):
    alias = make_event(type="alias", event=None, previousId="anon-7")
    page = make_event(type="page", event="not a track name", name="Home")
    response = client.post("/v1/batch", json={"batch": [alias, page]}, headers=auth)
    assert response.json()["accepted"] == 2
    rows = stored(db, project)
    assert rows[alias["messageId"]]["extra"] == {"previousId": "anon-7"}
    assert rows[page["messageId"]]["event"] == "$page"
    assert rows[page["messageId"]]["extra"] == {"event": "not a track name", "name": "Home"}


def test_batch_context_applies_to_each_event_and_event_keys_win(client, auth, db, project):
    event = make_event(context={"ip": "1.1.1.1"})
    body = {"batch": [event], "context": {"ip": "9.9.9.9", "library": {"name": "sdk"}}}
    assert client.post("/v1/batch", json=body, headers=auth).json()["accepted"] == 1
    assert stored(db, project)[event["messageId"]]["context"] == {"ip": "1.1.1.1", "library": {"name": "sdk"}}


def test_ingest_needs_the_ingest_scope(client, project):
    assert client.post("/v1/batch", json=make_batch(1)).status_code == 401
    response = client.post("/v1/batch", json=make_batch(1), headers=auth_headers(project, "query"))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


# --- per-event rules --------------------------------------------------------------------------

REJECTIONS = [
    ({"messageId": None}, "missing_message_id"),
    ({"messageId": ""}, "invalid_message_id"),
    ({"messageId": "x" * 201}, "invalid_message_id"),
    ({"messageId": 42}, "invalid_message_id"),
    ({"type": "purchase"}, "invalid_type"),
    ({"type": None}, "invalid_type"),
    ({"type": ["track"]}, "invalid_type"),
    ({"userId": None}, "missing_identity"),
    ({"userId": {"id": 1}}, "invalid_user_id"),
    ({"userId": True}, "invalid_user_id"),
    ({"anonymousId": ["a"]}, "invalid_anonymous_id"),
    ({"event": None}, "missing_event_name"),
    ({"event": ""}, "invalid_event_name"),
    ({"event": "e" * 201}, "invalid_event_name"),
    ({"event": 7}, "invalid_event_name"),
    ({"timestamp": 1700000000}, "invalid_timestamp"),
    ({"timestamp": "2026-11-26T10:00:00"}, "invalid_timestamp"),  # no offset
    ({"timestamp": "yesterday"}, "invalid_timestamp"),
    ({"timestamp": "1969-12-31T23:59:59Z"}, "timestamp_out_of_range"),
    ({"properties": [1, 2]}, "invalid_properties"),
    ({"properties": "x"}, "invalid_properties"),
    ({"context": 3}, "invalid_context"),
    ({"traits": [{}]}, "invalid_traits"),
]


@pytest.mark.parametrize(("overrides", "code"), REJECTIONS, ids=[c + str(i) for i, (_, c) in enumerate(REJECTIONS)])
def test_invalid_event_is_rejected_alone_with_a_stable_code(client, auth, db, project, overrides, code):
    good = make_event()
    bad = {k: v for k, v in {**make_event(), **overrides}.items() if v is not None}  # None: key absent
    response = client.post("/v1/batch", json={"batch": [good, bad]}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 0, 1)
    [error] = body["errors"]
    assert error["index"] == 1 and error["code"] == code and error["detail"]
    assert error["messageId"] == (bad.get("messageId") if isinstance(bad.get("messageId"), str) else None)
    assert set(stored(db, project)) == {good["messageId"]}


def test_non_object_event_is_rejected_alone(client, auth, db, project):
    response = client.post("/v1/batch", json={"batch": [make_event(), "event", 3, None, []]}, headers=auth)
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 4)
    assert [e["index"] for e in body["errors"]] == [1, 2, 3, 4]
    assert set(codes(response)) == {"invalid_event"}


def test_numeric_user_id_is_stored_as_its_decimal_string(client, auth, db, project):
    events = [make_event(userId=12345), make_event(userId=None, anonymousId=7)]
    assert client.post("/v1/batch", json={"batch": events}, headers=auth).json()["accepted"] == 2
    rows = stored(db, project)
    assert rows[events[0]["messageId"]]["user_id"] == "12345"
    assert rows[events[1]["messageId"]]["anonymous_id"] == "7"


def test_float_user_ids_are_stored_as_plain_decimals_not_exponents(client, auth, db, project):
    events = [make_event(userId=1e20), make_event(userId=12.5), make_event(userId=1.5e-7)]
    assert client.post("/v1/batch", json={"batch": events}, headers=auth).json()["accepted"] == 3
    rows = stored(db, project)
    assert [rows[e["messageId"]]["user_id"] for e in events] == ["100000000000000000000", "12.5", "0.00000015"]


def test_absent_timestamp_means_time_received(client, auth, db, project):
    event = make_event(timestamp=None)
    before = datetime.now(timezone.utc)
    client.post("/v1/batch", json={"batch": [event]}, headers=auth)
    after = datetime.now(timezone.utc)
    row = stored(db, project)[event["messageId"]]
    assert before <= row["ts"] == row["received_at"] <= after
    assert row["original_timestamp"] is None


def test_oversized_event_is_rejected_alone(client, auth, db, project):
    big = make_event(properties={"blob": "x" * (32 * 1024)})
    small = make_event()
    response = client.post("/v1/batch", json={"batch": [big, small]}, headers=auth)
    assert response.json()["accepted"] == 1 and codes(response) == ["event_too_large"]
    assert set(stored(db, project)) == {small["messageId"]}


# --- clock skew -------------------------------------------------------------------------------


def test_transit_time_under_the_threshold_never_shifts_timestamps(client, auth, db, project):
    now = datetime.now(timezone.utc)
    first = make_event(timestamp=iso(now - timedelta(seconds=40)))
    second = make_event(timestamp=iso(now - timedelta(seconds=39, milliseconds=999)))
    sent = iso(now - timedelta(seconds=30))  # 30 s in transit: under the 60 s threshold
    client.post("/v1/batch", json={"batch": [first, second], "sentAt": sent}, headers=auth)
    rows = stored(db, project)
    for event in (first, second):
        row = rows[event["messageId"]]
        assert row["ts"] == row["original_timestamp"] == datetime.fromisoformat(event["timestamp"])
        assert row["sent_at"] == datetime.fromisoformat(sent)
    assert rows[first["messageId"]]["ts"] < rows[second["messageId"]]["ts"]


def test_client_clock_skew_past_the_threshold_is_corrected(client, auth, db, project):
    client_now = datetime.now(timezone.utc) + timedelta(hours=3)  # the device clock is 3 h fast
    event = make_event(timestamp=iso(client_now - timedelta(seconds=10)))
    before = datetime.now(timezone.utc)
    client.post("/v1/batch", json={"batch": [event], "sentAt": iso(client_now)}, headers=auth)
    after = datetime.now(timezone.utc)
    row = stored(db, project)[event["messageId"]]
    # ts = receivedAt - (sentAt - timestamp): 10 s before it arrived, on the server's clock.
    assert row["ts"] == row["received_at"] - timedelta(seconds=10)
    assert before <= row["received_at"] <= after
    assert row["original_timestamp"] == datetime.fromisoformat(event["timestamp"])
    assert row["sent_at"] == datetime.fromisoformat(iso(client_now))


def test_corrected_time_beyond_the_future_tolerance_is_rejected(client, auth, db, project):
    now = datetime.now(timezone.utc)
    # The device clock is 2 h slow and the event claims to be 25 h after sending: a day too far.
    skewed = make_event(timestamp=iso(now + timedelta(hours=23)))
    near = make_event(timestamp=iso(now + timedelta(hours=20)))
    body = {"batch": [skewed, near], "sentAt": iso(now - timedelta(hours=2))}
    response = client.post("/v1/batch", json=body, headers=auth)
    assert codes(response) == ["timestamp_in_future"] and response.json()["errors"][0]["index"] == 0
    assert set(stored(db, project)) == {near["messageId"]}
    plain = client.post("/v1/batch", json={"batch": [make_event(timestamp=iso(now + timedelta(days=2)))]}, headers=auth)
    assert codes(plain) == ["timestamp_in_future"]


def test_extreme_timestamps_and_sent_at_are_rejected_not_a_server_error(client, auth, db, project):
    ancient = make_event(timestamp="0001-01-01T00:00:00+00:00")
    body = {"batch": [ancient, make_event()], "sentAt": "9999-12-31T00:00:00Z"}
    response = client.post("/v1/batch", json=body, headers=auth)
    assert response.status_code == 200, response.text
    # Corrected by a sentAt 8000 years ahead, both land before 1970 (the first before year 1).
    assert codes(response) == ["timestamp_out_of_range", "timestamp_out_of_range"]
    body = {"batch": [make_event(timestamp="9999-12-01T00:00:00Z")], "sentAt": "0001-01-01T00:00:00Z"}
    response = client.post("/v1/batch", json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 1


def test_invalid_sent_at_fails_the_whole_request(client, auth, db, project):
    response = client.post("/v1/batch", json={**make_batch(2), "sentAt": "2026-11-26T10:00:00"}, headers=auth)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert stored(db, project) == {}


# --- whole-request problems ---------------------------------------------------------------------

WHOLE_REQUEST = [
    (b'{"batch": [', 400),
    (b"", 400),
    (b"[]", 400),
    (b'"batch"', 400),
    (b'{"events": []}', 400),
    (b'{"batch": {"0": {}}}', 400),
    (b'{"batch": "x"}', 400),
    (b'{"batch": []}', 400),
    (b'{"batch": [{"messageId": "a"}], "context": []}', 400),
]


@pytest.mark.parametrize(("body", "status"), WHOLE_REQUEST)
def test_whole_request_problem_stores_nothing_and_answers_problem_json(client, auth, db, project, body, status):
    response = client.post("/v1/batch", content=body, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["code"] and problem["detail"]
    assert stored(db, project) == {}


def test_too_many_events_is_413_and_stores_nothing(client, auth, db, project):
    response = client.post("/v1/batch", json=make_batch(1001), headers=auth)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert stored(db, project) == {}
    assert client.post("/v1/batch", json=make_batch(1000), headers=auth).json()["accepted"] == 1000


def test_body_over_the_limit_is_413_and_stores_nothing(client, auth, db, project):
    events = [make_event(properties={"pad": "x" * 20_000}) for _ in range(60)]  # ~1.2 MB
    response = client.post("/v1/batch", json={"batch": events}, headers=auth)
    assert response.status_code == 413
    assert stored(db, project) == {}


# --- dedup and tenancy -----------------------------------------------------------------------


def test_duplicate_across_batches_is_counted_as_duplicate_and_stored_once(client, auth, db, project):
    first = make_batch(3)
    assert client.post("/v1/batch", json=first, headers=auth).json()["accepted"] == 3
    again = {"batch": [*first["batch"], make_event()]}
    body = client.post("/v1/batch", json=again, headers=auth).json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 3, 0)
    assert len(stored(db, project)) == 4
    assert_counts_match_events(db, project)


def test_duplicate_within_a_batch_keeps_the_first_occurrence(client, auth, db, project):
    first = make_event(messageId="m-1", properties={"which": "first"})
    second = make_event(messageId="m-1", properties={"which": "second"})
    body = client.post("/v1/batch", json={"batch": [first, second, make_event()]}, headers=auth).json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 0)
    assert stored(db, project)["m-1"]["properties"] == {"which": "first"}
    assert_counts_match_events(db, project)


def test_dedup_survives_the_process_live_server_sees_in_process_events(client, live_server, auth, db, project):
    import httpx

    batch = make_batch(4)
    assert client.post("/v1/batch", json=batch, headers=auth).json()["accepted"] == 4
    body = httpx.post(live_server + "/v1/batch", json=batch, headers=auth, timeout=10).json()
    assert (body["accepted"], body["duplicates"]) == (0, 4)
    assert len(stored(db, project)) == 4


def test_same_message_id_in_two_projects_is_two_events(client, db):
    one, two = "p_" + uuid.uuid4().hex[:12], "p_" + uuid.uuid4().hex[:12]
    event = make_event(messageId="shared-id")
    for project in (one, two):
        response = client.post("/v1/batch", json={"batch": [event]}, headers=auth_headers(project))
        assert response.json()["accepted"] == 1
    assert set(stored(db, one)) == set(stored(db, two)) == {"shared-id"}


def test_hourly_counts_equal_a_recount_after_duplicate_laden_ingests(client, auth, db, project):
    hours = ["2026-11-26T10:05:00Z", "2026-11-26T10:59:59.999Z", "2026-11-26T11:00:00Z", "2026-11-26T09:30:00-02:00"]
    pool = [make_event(timestamp=hours[i % 4], event=f"E{i % 3}") for i in range(24)]
    pool += [make_event(type="identify", event=None, timestamp=hours[i % 4]) for i in range(5)]
    for start in range(0, 29, 5):
        window = pool[start : start + 10]
        client.post("/v1/batch", json={"batch": window + window[:3]}, headers=auth)
    assert_counts_match_events(db, project)
    total = db.execute("SELECT sum(n) FROM event_counts_hourly WHERE project_id = %s", [project]).fetchone()[0]
    assert total == len(pool)
