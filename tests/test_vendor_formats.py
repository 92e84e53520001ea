"""The other vendors' wire formats over HTTP: every mapping rule onto the stored event, each
vendor's answer and rejection shape, the key in every place its SDKs put it, and the hostile
corpus sent through every format, never a 5xx. The SDKs themselves: tests/test_vendor_sdks.py."""

from __future__ import annotations

import base64
import gzip
import json
import time
from urllib.parse import quote

import orjson
import pytest

from tests.factories import token_for
from tests.test_corpus import MANIFEST, body_of

T0 = 1_780_000_000  # 2026-05-28T20:26:40Z


def stored(db, project: str) -> dict[str, dict]:
    cur = db.execute(
        "SELECT message_id, type, event, user_id, anonymous_id, ts, original_timestamp, properties, context, "
        "traits, extra FROM events WHERE project_id = %s", [project],
    )
    names = [c.name for c in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def key(project: str) -> str:
    return token_for(project, "ingest")


def form(records, **fields: str) -> bytes:
    return "&".join([f"data={quote(json.dumps(records))}", *(f"{k}={v}" for k, v in fields.items())]).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# --- PostHog ----------------------------------------------------------------------------------


def posthog_batch(project: str, events: list[dict]) -> bytes:
    return orjson.dumps({"api_key": key(project), "batch": events, "sent_at": "2026-11-26T10:00:00Z"})


def test_posthog_events_map_onto_the_segment_types(client, db, project):
    events = [
        {"event": "Order Completed", "distinct_id": "u1", "uuid": "ph-1", "timestamp": "2026-11-26T09:00:00Z",
         "properties": {"revenue": 3, "token": key(project), "$lib": "posthog-python", "$lib_version": "7"}},
        {"event": "$set", "distinct_id": "u1", "uuid": "ph-2", "$set": {"plan": "pro"}, "timestamp": "2026-11-26T09:00:01Z"},
        {"event": "$identify", "distinct_id": "u1", "uuid": "ph-3", "properties": {"$anon_distinct_id": "anon-1",
                                                                                 "$set": {"email": "a@b.c"}}},
        {"event": "$groupidentify", "distinct_id": "u1", "uuid": "ph-4",
         "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"name": "Acme"}}},
        {"event": "$create_alias", "distinct_id": "old-id", "uuid": "ph-5", "properties": {"distinct_id": "old-id", "alias": "new-id"}},
        {"event": "$pageview", "distinct_id": "u1", "uuid": "ph-6", "properties": {"$current_url": "https://x.example/"}},
        {"event": "$screen", "distinct_id": "u1", "uuid": "ph-7", "properties": {"$screen_name": "Home"}},
    ]
    response = client.post("/batch/", content=posthog_batch(project, events))
    assert response.status_code == 200 and response.json() == {"status": 1}, response.text
    rows = stored(db, project)
    assert {m: (r["type"], r["event"]) for m, r in rows.items()} == {
        "ph-1": ("track", "Order Completed"), "ph-2": ("identify", "$identify"), "ph-3": ("identify", "$identify"),
        "ph-4": ("group", "$group"), "ph-5": ("alias", "$alias"), "ph-6": ("page", "$page"), "ph-7": ("screen", "$screen"),
    }
    assert rows["ph-1"]["user_id"] == "u1" and rows["ph-1"]["original_timestamp"].isoformat() == "2026-11-26T09:00:00+00:00"
    assert rows["ph-1"]["properties"] == {"revenue": 3, "$lib": "posthog-python", "$lib_version": "7"}
    assert rows["ph-1"]["context"] == {"library": {"name": "posthog-python", "version": "7"}, "wire": "posthog"}
    assert rows["ph-2"]["traits"] == {"plan": "pro"}
    assert (rows["ph-3"]["anonymous_id"], rows["ph-3"]["traits"]) == ("anon-1", {"email": "a@b.c"})
    assert rows["ph-4"]["traits"] == {"name": "Acme"} and rows["ph-4"]["extra"] == {"groupId": "acme"}
    assert (rows["ph-5"]["user_id"], rows["ph-5"]["extra"]) == ("new-id", {"previousId": "old-id"})
    assert rows["ph-7"]["extra"] == {"name": "Home"}
    assert key(project).split(".")[0] not in repr(rows)  # no key, in any column


def test_posthog_key_where_its_sdks_put_it(client, db, project):
    event = {"event": "E", "distinct_id": "u1", "properties": {"token": key(project)}}
    single = client.post("/e/", content=orjson.dumps({**event, "uuid": "e-1"}))
    listed = client.post("/capture", content=orjson.dumps([{**event, "uuid": "e-2"}]))
    top = client.post("/i/v0/e", content=orjson.dumps({"token": key(project), "event": "E", "distinct_id": "u", "uuid": "e-3"}))
    assert [r.status_code for r in (single, listed, top)] == [200, 200, 200]
    none = client.post("/batch/", content=orjson.dumps({"batch": [{"event": "E", "distinct_id": "u"}]}))
    assert none.status_code == 401 and none.headers["content-type"] == "application/problem+json"
    assert set(stored(db, project)) == {"e-1", "e-2", "e-3"}


def test_posthog_events_without_uuid_get_an_id_from_their_content(client, db, project):
    event = {"event": "E", "distinct_id": "u1", "timestamp": "2026-11-26T09:00:00Z", "properties": {"n": 1}}
    for _ in range(2):
        assert client.post("/batch/", content=posthog_batch(project, [event])).status_code == 200
    client.post("/batch/", content=posthog_batch(project, [{**event, "properties": {"n": 2}}]))
    ids = sorted(stored(db, project))
    assert len(ids) == 2 and all(i.startswith("posthog-") for i in ids)


def test_posthog_gzip_and_retries_are_duplicates(client, db, project):
    body = gzip.compress(posthog_batch(project, [{"event": "E", "distinct_id": "u", "uuid": "g-1"}]))
    for _ in range(2):
        response = client.post("/batch/", content=body, headers={"Content-Encoding": "gzip"})
        assert response.json() == {"status": 1}
    assert list(stored(db, project)) == ["g-1"]


def test_posthog_v1_answers_a_result_per_uuid_dropping_rejected_events(client, db, project):
    body = orjson.dumps({"created_at": "2026-11-26T10:00:00Z", "batch": [
        {"event": "E", "uuid": "v1-ok", "distinct_id": "u", "timestamp": "2026-11-26T09:00:00Z", "properties": {}},
        {"event": "E", "uuid": "v1-bad", "timestamp": "2026-11-26T09:00:00Z", "properties": {}},  # no distinct_id
    ]})
    response = client.post("/i/v1/analytics/events", content=body, headers={"Authorization": f"Bearer {key(project)}"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results["v1-ok"] == {"result": "ok"}
    assert results["v1-bad"]["result"] == "drop" and results["v1-bad"]["code"] == "missing_identity"
    assert list(stored(db, project)) == ["v1-ok"]
    assert client.post("/i/v1/analytics/events", content=body).status_code == 401  # Bearer only


# --- Mixpanel ---------------------------------------------------------------------------------


def test_mixpanel_track_import_engage_and_groups_map_onto_segment_events(client, db, project):
    token = key(project)
    track = client.post("/track", content=form({"event": "Bought", "properties": {
        "token": token, "distinct_id": "u1", "time": T0, "$insert_id": "mp-1", "mp_lib": "python", "price": 3}},
        verbose="1", ip="0"), headers=FORM)
    imported = client.post("/import", content=form([{"event": "Old", "properties": {
        "token": token, "distinct_id": "u1", "time": T0 * 1000, "$insert_id": "mp-2"}}]),
        headers={**FORM, "Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()})
    engage = client.post("/engage", content=form({"$token": token, "$distinct_id": "u1", "$time": T0,
                                                  "$set": {"plan": "pro"}, "$add": {"visits": 1}}), headers=FORM)
    groups = client.post("/groups", content=form({"$token": token, "$group_key": "company", "$group_id": "acme",
                                                  "$set": {"name": "Acme"}}), headers=FORM)
    for response in (track, imported, engage, groups):
        assert response.status_code == 200 and response.json() == {"status": 1, "error": None}, response.text
    rows = stored(db, project)
    assert rows["mp-1"]["type"] == "track" and rows["mp-1"]["event"] == "Bought" and rows["mp-1"]["user_id"] == "u1"
    assert rows["mp-1"]["original_timestamp"].timestamp() == T0 == rows["mp-2"]["original_timestamp"].timestamp()
    assert rows["mp-1"]["properties"] == {"mp_lib": "python", "price": 3}
    assert rows["mp-1"]["context"] == {"library": {"name": "python"}, "wire": "mixpanel"}
    profile = next(r for r in rows.values() if r["type"] == "identify")
    assert (profile["user_id"], profile["traits"], profile["properties"]) == ("u1", {"plan": "pro"}, {"$add": {"visits": 1}})
    group = next(r for r in rows.values() if r["type"] == "group")
    assert group["anonymous_id"] == "$group:company:acme" and group["traits"] == {"name": "Acme"}
    assert token not in repr(rows)


def test_mixpanel_data_may_be_base64_and_the_answer_is_always_its_status_json(client, db, project):
    record = {"event": "E", "properties": {"token": key(project), "distinct_id": "u", "$insert_id": "b64"}}
    encoded = base64.b64encode(json.dumps(record).encode()).decode()
    assert client.post("/track", content=f"data={quote(encoded)}".encode(), headers=FORM).json() == {"status": 1, "error": None}
    refused = client.post("/track", content=form({"event": "E", "properties": {"token": "nope", "distinct_id": "u"}}), headers=FORM)
    assert refused.status_code == 401 and refused.json()["status"] == 0 and refused.json()["error"]
    no_data = client.post("/track", content=b"verbose=1", headers=FORM)
    assert no_data.status_code == 400 and no_data.json()["status"] == 0
    assert list(stored(db, project)) == ["b64"]


def test_mixpanel_rejected_records_say_so_and_strict_mode_lists_them(client, db, project):
    records = [{"event": "E", "properties": {"token": key(project), "distinct_id": "u", "$insert_id": "ok-1", "time": T0}},
               {"event": "E", "properties": {"token": key(project), "$insert_id": "bad-1", "time": T0}}]  # no person
    loose = client.post("/track", content=form(records), headers=FORM)
    assert loose.status_code == 200 and loose.json()["status"] == 0 and "missing_identity" in loose.json()["error"]
    strict = client.post("/import", content=form(records, strict="1"), headers=FORM)
    assert strict.status_code == 400, strict.text
    failed = strict.json()["failed_records"]
    assert [(f["index"], f["$insert_id"], f["field"]) for f in failed] == [(1, "bad-1", "missing_identity")]
    assert strict.json()["num_records_imported"] == 1
    assert list(stored(db, project)) == ["ok-1"]


# --- Amplitude --------------------------------------------------------------------------------


def amplitude(project: str, events: list[dict], path: str = "/2/httpapi", client=None):
    return client.post(path, content=orjson.dumps({"api_key": key(project), "events": events}),
                       headers={"Content-Type": "application/json; charset=UTF-8"})


def test_amplitude_events_map_onto_segment_events(client, db, project):
    events = [
        {"event_type": "Bought", "user_id": "u1", "device_id": "d1", "time": T0 * 1000, "insert_id": "am-1",
         "event_properties": {"price": 3}, "user_properties": {"tier": "gold"}, "platform": "Web", "library": "amplitude-python/1.3.0"},
        {"event_type": "$identify", "user_id": "u1", "time": T0 * 1000, "insert_id": "am-2",
         "user_properties": {"$set": {"plan": "pro"}, "$add": {"visits": 1}}},
        {"event_type": "$groupidentify", "user_id": "u1", "insert_id": "am-3", "groups": {"company": "acme"},
         "group_properties": {"$set": {"name": "Acme"}}},
    ]
    response = amplitude(project, events, client=client)
    assert response.status_code == 200 and response.json()["code"] == 200 and response.json()["events_ingested"] == 3
    rows = stored(db, project)
    assert (rows["am-1"]["type"], rows["am-1"]["event"], rows["am-1"]["anonymous_id"]) == ("track", "Bought", "d1")
    assert rows["am-1"]["original_timestamp"].timestamp() == T0
    assert rows["am-1"]["traits"] == {"tier": "gold"} and rows["am-1"]["extra"] == {"platform": "Web"}
    assert rows["am-1"]["context"] == {"library": {"name": "amplitude-python/1.3.0"}, "wire": "amplitude"}
    assert rows["am-2"]["type"] == "identify" and rows["am-2"]["traits"] == {"plan": "pro"}
    assert rows["am-2"]["properties"] == {"$add": {"visits": 1}}
    assert rows["am-3"]["type"] == "group" and rows["am-3"]["traits"] == {"name": "Acme"}


def test_amplitude_rejections_name_their_indices_by_field_and_the_rest_is_stored(client, db, project):
    events = [{"event_type": "E", "user_id": "u", "insert_id": "ok"},
              {"event_type": "E", "insert_id": "no-person"},
              {"event_type": "E", "user_id": "u", "insert_id": "bad-time", "time": "yesterday"}]
    response = amplitude(project, events, client=client)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 400
    assert body["events_with_missing_fields"] == {"user_id": [1]}
    assert body["events_with_invalid_fields"] == {"time": [2]}
    assert list(stored(db, project)) == ["ok"]
    # The SDK sends the others again: a duplicate, answered 200.
    again = amplitude(project, events[:1], client=client)
    assert again.status_code == 200 and list(stored(db, project)) == ["ok"]


def test_amplitude_on_batch_and_its_failures_in_its_shape(client, db, project):
    assert amplitude(project, [{"event_type": "E", "user_id": "u", "insert_id": "b-1"}], "/batch", client).json()["code"] == 200
    refused = client.post("/2/httpapi", content=orjson.dumps({"api_key": "nope", "events": [{"event_type": "E"}]}))
    assert refused.status_code == 401 and refused.json()["code"] == 401 and refused.json()["error"]
    empty = client.post("/2/httpapi", content=orjson.dumps({"api_key": key(project), "events": []}))
    assert empty.status_code == 400 and empty.json()["code"] == 400
    assert list(stored(db, project)) == ["b-1"]


def test_the_wire_format_shows_in_the_listing(client, project):
    amplitude(project, [{"event_type": "E", "user_id": "u", "insert_id": "w-1"}], client=client)
    listing = client.get("/v1/events", headers={"Authorization": f"Bearer {token_for(project, 'query')}"})
    assert listing.json()["data"][0]["context"]["wire"] == "amplitude"


# --- the hostile corpus, through every format ---------------------------------------------------


def wrapped(path: str, raw: bytes, token: str) -> tuple[bytes, dict]:
    if path == "/track":
        return b"data=" + quote(raw).encode(), FORM
    if path == "/i/v1/analytics/events":
        return raw, {"Authorization": f"Bearer {token}"}
    return raw, {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/batch/", "/i/v1/analytics/events", "/track", "/2/httpapi"])
def test_every_hostile_body_through_every_format_is_4xx_or_200_never_5xx(client, project, path):
    token = key(project)
    started = time.monotonic()
    for name, case in MANIFEST.items():
        body, headers = wrapped(path, body_of(case), token)
        response = client.post(path, content=body, headers={"Content-Type": "application/json", **headers, **case["headers"]}
                               if path != "/track" else {**headers, **case["headers"], "Content-Type": FORM["Content-Type"]})
        assert response.status_code < 500, (name, response.text)
    assert time.monotonic() - started < 60


def test_a_database_outage_is_a_status_each_sdk_retries_in_its_shape():
    from fastapi.testclient import TestClient

    from tally.app import create_app
    from tests.helpers import make_settings

    app = create_app(make_settings("postgresql://postgres@127.0.0.1:1/tally", db_pool_timeout=0.2))
    with TestClient(app, raise_server_exceptions=False) as down:
        token = key("p_down")
        posthog = down.post("/batch/", content=orjson.dumps({"api_key": token, "batch": [{"event": "E", "distinct_id": "u"}]}))
        mixpanel = down.post("/track", content=form({"event": "E", "properties": {"token": token, "distinct_id": "u"}}), headers=FORM)
        amplitude_ = down.post("/2/httpapi", content=orjson.dumps({"api_key": token, "events": [{"event_type": "E", "user_id": "u"}]}))
    assert posthog.status_code == 503 and posthog.json()["code"] == "database_unavailable"
    assert mixpanel.status_code == 503 and mixpanel.json()["status"] == 0
    assert amplitude_.status_code == 503 and amplitude_.json()["code"] == 503
    assert all(r.headers["retry-after"] == "1" for r in (posthog, mixpanel, amplitude_))


def test_the_tracking_plan_applies_to_every_format(client, db, project):
    schema = {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}
    admin = {"Authorization": f"Bearer {token_for(project, 'admin')}"}
    assert client.post("/v1/schemas", json={"event": "Bought", "schema": schema, "mode": "enforce"}, headers=admin).status_code == 201
    services = client.app.state.services
    from ingest.service import IngestServices

    client.portal.call(services.role(IngestServices).plan.refresh, services.pool, 2.0)
    response = amplitude(project, [{"event_type": "Bought", "user_id": "u", "insert_id": "p-ok", "event_properties": {"price": 1}},
                                   {"event_type": "Bought", "user_id": "u", "insert_id": "p-bad", "event_properties": {}}],
                         client=client)
    assert response.status_code == 400 and response.json()["events_with_invalid_fields"] == {"event_properties": [1]}
    assert response.json()["rejections"][0]["code"] == "schema_violation"
    ph = client.post("/i/v1/analytics/events", headers={"Authorization": f"Bearer {key(project)}"}, content=orjson.dumps(
        {"batch": [{"event": "Bought", "uuid": "ph-bad", "distinct_id": "u", "properties": {"price": "x"}}]}))
    assert ph.json()["results"]["ph-bad"]["code"] == "schema_violation"
    assert list(stored(db, project)) == ["p-ok"]


def test_a_pool_timeout_is_the_same_retryable_503_in_each_vendor_shape(database_url, project):
    from fastapi.testclient import TestClient

    from tally.app import create_app
    from tests.helpers import make_settings

    app = create_app(make_settings(database_url, db_pool_size=1, db_pool_timeout=0.2))
    with TestClient(app, raise_server_exceptions=False) as busy:
        pool = app.state.services.pool
        held = busy.portal.call(pool.getconn)  # the only connection: every request waits, then times out
        try:
            amplitude_ = amplitude(project, [{"event_type": "E", "user_id": "u", "insert_id": "t-1"}], client=busy)
            mixpanel = busy.post("/track", content=form({"event": "E", "properties": {
                "token": key(project), "distinct_id": "u", "$insert_id": "t-2"}}), headers=FORM)
        finally:
            busy.portal.call(pool.putconn, held)
    assert amplitude_.status_code == 503 and amplitude_.json() == {"code": 503, "error": "Database unavailable, retry later"}
    assert mixpanel.status_code == 503 and mixpanel.json()["status"] == 0
    assert amplitude_.headers["retry-after"] == "1"
