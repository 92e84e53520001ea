"""What browser SDKs need from the ingest endpoints, over HTTP: CORS, the write key where each
SDK puts it, their paths and content types, RudderStack's event time, and a write key that is
never stored or shown. The SDKs themselves run in tests/test_web_sdks.py and test_node_sdks.py."""

from __future__ import annotations

import base64
import gzip
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tally.app import create_app
from tests.factories import make_event, token_for
from tests.helpers import make_settings

PAGE = "https://shop.example.com"


def stored(db, project: str) -> list[dict]:
    cur = db.execute(
        "SELECT message_id, type, event, user_id, ts, original_timestamp, extra FROM events "
        "WHERE project_id = %s ORDER BY message_id", [project],
    )
    names = [c.name for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def key_of(project: str, **claims) -> str:
    return token_for(project, "ingest", **claims)


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}


# --- CORS ---------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": PAGE, "Access-Control-Request-Method": "POST"}


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/t", "/v1/track", "/v1/b", "/v1/import", "/beacon/v1/batch",
                                  "/v1/m", "/rsaMetrics", "/v1/projects/k/settings", "/sourceConfig/"])
def test_a_preflight_on_a_browser_path_is_204_for_any_origin(client, path):
    asked = "anonymousid, authorization, content-type, sentat, rsa-retry-attempt, x-retry-count"
    response = client.options(path, headers={**PREFLIGHT, "Access-Control-Request-Headers": asked})
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == PAGE
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == asked
    assert int(response.headers["access-control-max-age"]) > 0
    assert "Origin" in response.headers["vary"]


def test_requested_headers_that_are_not_header_names_are_not_echoed(client):
    response = client.options("/v1/batch", headers={**PREFLIGHT, "Access-Control-Request-Headers": "x\r\ny: z, (a)"})
    assert response.status_code == 204
    assert "access-control-allow-headers" not in response.headers


def test_every_ingest_answer_carries_the_origin_errors_included(client, project):
    answers = [
        client.post("/v1/t", content=orjson.dumps(make_event()), headers={"Origin": PAGE, **basic(key_of(project))}),
        client.post("/v1/batch", content=b"{", headers={"Origin": PAGE, **basic(key_of(project))}),  # 400
        client.post("/v1/batch", content=orjson.dumps({"batch": [make_event()]}), headers={"Origin": PAGE}),  # 401
        client.post("/v1/batch", content=b"<a/>", headers={"Origin": PAGE, "Content-Type": "application/xml"}),  # 415
    ]
    assert [r.status_code for r in answers] == [200, 400, 401, 415]
    for response in answers:
        assert response.headers["access-control-allow-origin"] == PAGE
        assert "Retry-After" in response.headers["access-control-expose-headers"]


@pytest.mark.parametrize("path", ["/v1/events", "/v1/aggregates", "/v1/schemas", "/v1/tokens/revoked"])
def test_query_and_admin_paths_stay_closed_to_pages_by_default(client, project, path):
    preflight = client.options(path, headers=PREFLIGHT)
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers
    response = client.get(path, headers={"Origin": PAGE, **basic(token_for(project))})
    assert "access-control-allow-origin" not in response.headers


def test_the_origins_of_tally_cors_origins_may_call_the_query_paths(database_url, project):
    from fastapi.testclient import TestClient

    app = create_app(make_settings(database_url, cors_origins=["https://dash.example.com"]))
    with TestClient(app) as dash:
        allowed = dash.options("/v1/events", headers={"Origin": "https://dash.example.com",
                                                      "Access-Control-Request-Method": "GET",
                                                      "Access-Control-Request-Headers": "authorization"})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example.com"
        assert allowed.headers["access-control-allow-headers"] == "authorization"
        listing = dash.get("/v1/events", headers={"Origin": "https://dash.example.com", **basic(token_for(project))})
        assert listing.status_code == 200 and listing.headers["access-control-allow-origin"] == "https://dash.example.com"
        other = dash.options("/v1/events", headers={**PREFLIGHT, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in other.headers


def test_a_token_with_origins_refuses_other_pages_with_403_and_says_so(client, db, project):
    token = key_of(project, origins=["https://shop.example.com"])
    ok = client.post("/v1/t", content=orjson.dumps(make_event()), headers={"Origin": PAGE, **basic(token)})
    assert ok.status_code == 200, ok.text
    refused = client.post("/v1/t", content=orjson.dumps(make_event()),
                          headers={"Origin": "https://evil.example.net", **basic(token)})
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "origin_not_allowed"
    assert "evil.example.net" in refused.json()["detail"]
    assert refused.headers["access-control-allow-origin"] == "https://evil.example.net"  # so the page can read why
    # A server-side SDK sends no Origin: the claim concerns browsers only.
    assert client.post("/v1/t", content=orjson.dumps(make_event()), headers=basic(token)).status_code == 200
    assert len(stored(db, project)) == 2


# --- the write key where the SDK puts it ---------------------------------------------------------


def test_the_key_may_be_the_body_writekey_of_a_batch_or_a_single_event(client, db, project):
    key = key_of(project)
    batch = client.post("/v1/b", content=orjson.dumps({"batch": [make_event(writeKey=key)], "writeKey": key}))
    single = client.post("/v1/t", content=orjson.dumps({**make_event(), "writeKey": key}),
                         headers={"Content-Type": "text/plain"})
    assert (batch.status_code, single.status_code) == (200, 200), (batch.text, single.text)
    assert [r["extra"] for r in stored(db, project)] == [None, None]


def test_the_key_may_be_a_writekey_query_parameter_as_beacons_send_it(client, db, project):
    body = orjson.dumps({"batch": [make_event(), make_event()], "sentAt": "2026-11-26T10:00:00Z"})
    response = client.post("/beacon/v1/batch", params={"writeKey": key_of(project)}, content=body,
                           headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text


def test_a_body_key_that_disagrees_with_the_header_is_401(client, db, project):
    other = key_of(project)  # another valid token of the same project: still not the header's
    response = client.post("/v1/batch", content=orjson.dumps({"batch": [make_event()], "writeKey": other}),
                           headers=basic(key_of(project)))
    assert response.status_code == 401 and response.json()["code"] == "invalid_token", response.text
    assert stored(db, project) == []


@pytest.mark.parametrize("where", ["body", "query"])
def test_a_key_in_the_body_or_query_is_verified_like_a_header(client, db, project, where):
    for key, status in ((key_of(project), 200), (token_for(project, "query"), 403), ("not-a-jwt", 401),
                        (token_for(project, "ingest", ttl_seconds=-60), 401)):
        body = {"batch": [make_event()], **({"writeKey": key} if where == "body" else {})}
        params = {"writeKey": key} if where == "query" else None
        response = client.post("/v1/b", content=orjson.dumps(body), params=params)
        assert response.status_code == status, (key, response.text)


def test_no_key_anywhere_is_401_with_the_challenge(client):
    response = client.post("/v1/b", content=orjson.dumps({"batch": [make_event()]}))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="tally"'


def test_a_write_key_is_never_stored_nor_listed(client, db, project):
    key = key_of(project)
    items = [make_event(writeKey=key), make_event(type="identify", writeKey=key, event=None)]
    response = client.post("/v1/b", content=orjson.dumps({"batch": items, "writeKey": key}))
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text
    raw = db.execute("SELECT row_to_json(e)::text FROM events e WHERE project_id = %s", [project]).fetchall()
    assert len(raw) == 2 and not any(key in text or "writeKey" in text for (text,) in raw)
    listing = client.get("/v1/events", headers=basic(token_for(project, "query")))
    assert listing.status_code == 200 and len(listing.json()["data"]) == 2
    assert key not in listing.text and "writeKey" not in listing.text


# --- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, kind", [("/v1/t", "track"), ("/v1/i", "identify"), ("/v1/p", "page"),
                                        ("/v1/s", "screen"), ("/v1/g", "group"), ("/v1/a", "alias")])
def test_segments_short_paths_take_one_event_of_their_type(client, db, project, path, kind):
    event = make_event(type=None, event="Clicked" if kind == "track" else None)
    response = client.post(path, content=orjson.dumps(event), headers=basic(key_of(project)))
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
    assert stored(db, project)[0]["type"] == kind
    wrong = client.post(path, content=orjson.dumps(make_event(type="screen" if kind != "screen" else "page")),
                        headers=basic(key_of(project)))
    assert wrong.json()["errors"][0]["code"] == "invalid_type"


def test_sdk_telemetry_is_answered_204_and_dropped(client, db, project):
    for path in ("/v1/m", "/rsaMetrics"):
        response = client.post(path, content=b'{"series": []}', headers={"Content-Type": "text/plain", "Origin": PAGE})
        assert response.status_code == 204 and response.headers["access-control-allow-origin"] == PAGE
    assert stored(db, project) == []


def test_segment_settings_send_to_this_server_and_only_for_an_ingest_key(client, project):
    key = key_of(project)
    response = client.get(f"/v1/projects/{key}/settings", headers={"Origin": PAGE})
    assert response.status_code == 200, response.text
    segment = response.json()["integrations"]["Segment.io"]
    assert segment == {"apiKey": key, "apiHost": "testserver/v1", "protocol": "http"}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["access-control-allow-origin"] == PAGE
    assert client.get("/v1/projects/nope/settings").status_code == 401
    assert client.get(f"/v1/projects/{token_for(project, 'query')}/settings").status_code == 403


def test_rudderstack_source_config_is_an_enabled_source_for_an_ingest_key(client, project):
    for kwargs in ({"params": {"writeKey": key_of(project)}}, {"headers": basic(key_of(project))}):
        response = client.get("/sourceConfig/", **kwargs)
        assert response.status_code == 200, response.text
        source = response.json()["source"]
        assert source["id"] == project and source["enabled"] is True
        assert source["config"] == {} and source["destinations"] == []
    assert client.get("/sourceConfig/", params={"writeKey": "nope"}).status_code == 401
    assert client.head("/sourceConfig/", params={"writeKey": key_of(project), "view": "ad"}).status_code == 200


# --- RudderStack's event time ---------------------------------------------------------------------


def test_original_timestamp_is_the_event_time_when_there_is_no_timestamp(client, db, project):
    event = make_event(timestamp=None, originalTimestamp="2026-11-26T09:59:00.000Z")
    response = client.post("/v1/track", content=orjson.dumps({**event, "sentAt": "2026-11-26T10:00:00.000Z"}),
                           headers=basic(key_of(project)))
    assert response.status_code == 200, response.text
    row = stored(db, project)[0]
    assert row["original_timestamp"].isoformat() == "2026-11-26T09:59:00+00:00"
    # Skew-corrected by sentAt as a timestamp is: the event happened a minute before it was sent,
    # whatever the client's clock said.
    lag = datetime.now(timezone.utc) - row["ts"]
    assert timedelta(seconds=55) < lag < timedelta(seconds=120), lag
    assert row["extra"] is None


def test_original_timestamp_beside_a_timestamp_is_kept_as_sent(client, db, project):
    event = make_event(originalTimestamp="2026-11-26T09:00:00Z")
    client.post("/v1/batch", content=orjson.dumps({"batch": [event]}), headers=basic(key_of(project)))
    row = stored(db, project)[0]
    assert row["original_timestamp"].isoformat() == "2026-11-26T10:00:00+00:00"
    assert row["extra"] == {"originalTimestamp": "2026-11-26T09:00:00Z"}


def test_a_bad_original_timestamp_rejects_its_event_naming_it(client, project):
    event = make_event(timestamp=None, originalTimestamp="yesterday")
    body = client.post("/v1/batch", content=orjson.dumps({"batch": [event]}), headers=basic(key_of(project))).json()
    assert body["errors"][0]["code"] == "invalid_timestamp"
    assert "originalTimestamp" in body["errors"][0]["detail"]


def test_gzip_form_labelled_batches_with_origin_are_stored(client, db, project):
    body = gzip.compress(orjson.dumps({"batch": [make_event()]}))
    response = client.post("/v1/batch", content=body, headers={
        **basic(key_of(project)), "Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip",
    })
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.text


def test_tally_token_origins_writes_the_claim(database_url, tmp_path):
    import subprocess
    import sys

    import jwt

    from tests.factories import SECRET
    from tests.helpers import ROOT

    env = {"TALLY_DATABASE_URL": database_url, "TALLY_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "tally.cli", "token", "--project", "p", "--scope", "ingest",
         "--origins", "https://shop.example.com,https://www.example.com"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="tally")
    assert claims["origins"] == ["https://shop.example.com", "https://www.example.com"]
    refused = subprocess.run(
        [sys.executable, "-m", "tally.cli", "token", "--project", "p", "--scope", "ingest", "--origins", "shop"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode != 0 and "invalid --origins" in refused.stderr
