"""The schema resource over HTTP on a real Postgres: create, read, list, replace, delete, with ETags;
every refusal is problem+json; a token's project is the only one it can see or change."""

from __future__ import annotations

import re

import threading
import uuid
from urllib.parse import quote

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from tally.app import create_app
from tests.factories import token_for
from tests.helpers import make_settings

ORDER = {
    "type": "object",
    "required": ["order_id", "total"],
    "properties": {"order_id": {"type": "string"}, "total": {"type": "number", "minimum": 0}},
}
MAX_SCHEMA_BYTES = 64 * 1024  # the default of TALLY_MAX_SCHEMA_BYTES


def headers(project: str, sub: str = "alice", scopes: str = "admin", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(project, scopes, sub=sub)}", **extra}


def path(event: str) -> str:
    encoded = quote(event, safe="")
    return "/v1/schemas/" + (encoded.replace(".", "%2E") if event in (".", "..") else encoded)


def create(client, project: str, event: str = "Order Completed", schema: dict = ORDER, mode: str = "enforce",
           **extra) -> httpx.Response:
    response = client.post(
        "/v1/schemas", json={"event": event, "schema": schema, "mode": mode, **extra}, headers=headers(project)
    )
    assert response.status_code == 201, response.text
    return response


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    return body


def test_create_answers_201_with_location_etag_and_the_stored_resource(client, project):
    response = create(client, project, description="A checkout finished")
    body = response.json()
    assert response.headers["location"] == "/v1/schemas/Order%20Completed"
    assert re.fullmatch(r'"[A-Za-z0-9_-]{22}"', response.headers["etag"])  # 128 random bits, strong
    assert body["event"] == "Order Completed" and body["schema"] == ORDER and body["mode"] == "enforce"
    assert body["description"] == "A checkout finished"
    assert body["version"] == 1 and body["updated_by"] == "alice"
    assert body["created_at"] == body["updated_at"]

    read = client.get(response.headers["location"], headers=headers(project))
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["etag"] == response.headers["etag"]


def test_if_none_match_with_the_current_etag_is_304_and_any_other_gets_the_body(client, project):
    etag = create(client, project).headers["etag"]
    for held in (etag, f"W/{etag}", f'"r0", {etag}', "*"):
        response = client.get(path("Order Completed"), headers=headers(project, **{"If-None-Match": held}))
        assert response.status_code == 304, held
        assert response.headers["etag"] == etag and response.content == b""
    stale = client.get(path("Order Completed"), headers=headers(project, **{"If-None-Match": '"r0"'}))
    assert stale.status_code == 200 and stale.json()["schema"] == ORDER


def test_put_with_the_current_etag_replaces_bumps_the_version_and_the_etag(client, project):
    first = create(client, project)
    new_schema = {"type": "object", "required": ["order_id"]}
    response = client.put(
        path("Order Completed"), json={"schema": new_schema, "mode": "flag", "description": "relaxed"},
        headers=headers(project, sub="bob", **{"If-Match": first.headers["etag"]}),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schema"] == new_schema and body["mode"] == "flag" and body["description"] == "relaxed"
    assert body["version"] == 2 and body["updated_by"] == "bob"
    assert body["created_at"] == first.json()["created_at"] and body["updated_at"] > body["created_at"]
    assert response.headers["etag"] != first.headers["etag"]
    read = client.get(path("Order Completed"), headers=headers(project))
    assert read.json() == body and read.headers["etag"] == response.headers["etag"]


def test_put_without_if_match_replaces_unconditionally_and_may_repeat_the_event(client, project):
    create(client, project)
    response = client.put(path("Order Completed"), json={"event": "Order Completed", "schema": {}, "mode": "flag"},
                          headers=headers(project))
    assert response.status_code == 200 and response.json()["version"] == 2
    assert response.json()["description"] is None


def test_put_with_a_stale_or_foreign_etag_is_412_and_changes_nothing(client, project):
    first = create(client, project)
    replaced = client.put(path("Order Completed"), json={"schema": {}, "mode": "flag"},
                          headers=headers(project, **{"If-Match": first.headers["etag"]}))
    assert replaced.status_code == 200
    for sent in (first.headers["etag"], f"W/{replaced.headers['etag']}", '"nope"', "r1"):
        response = client.put(path("Order Completed"), json={"schema": ORDER, "mode": "enforce"},
                              headers=headers(project, **{"If-Match": sent}))
        assert_problem(response, 412, "precondition_failed")
    read = client.get(path("Order Completed"), headers=headers(project))
    assert read.json()["version"] == 2 and read.json()["schema"] == {}
    assert read.headers["etag"] == replaced.headers["etag"]


def test_if_match_star_or_a_list_holding_the_current_etag_matches(client, project):
    etag = create(client, project).headers["etag"]
    listed = client.put(path("Order Completed"), json={"schema": {}, "mode": "flag"},
                        headers=headers(project, **{"If-Match": f'"r0", {etag}'}))
    assert listed.status_code == 200 and listed.json()["version"] == 2
    star = client.put(path("Order Completed"), json={"schema": ORDER, "mode": "enforce"},
                      headers=headers(project, **{"If-Match": "*"}))
    assert star.status_code == 200 and star.json()["version"] == 3


def test_put_does_not_create_missing_is_404_or_412_with_if_match(client, project):
    body = {"schema": ORDER, "mode": "enforce"}
    assert_problem(client.put(path("Never Created"), json=body, headers=headers(project)), 404, "schema_not_found")
    for sent in ("*", '"r1"'):
        response = client.put(path("Never Created"), json=body, headers=headers(project, **{"If-Match": sent}))
        assert_problem(response, 412, "precondition_failed")
    assert_problem(client.get(path("Never Created"), headers=headers(project)), 404, "schema_not_found")


def test_put_naming_another_event_in_the_body_is_422(client, project):
    create(client, project)
    response = client.put(path("Order Completed"), json={"event": "Other", "schema": {}, "mode": "flag"},
                          headers=headers(project))
    assert_problem(response, 422, "event_mismatch")
    assert client.get(path("Order Completed"), headers=headers(project)).json()["version"] == 1


def test_delete_honours_if_match_then_the_schema_is_gone(client, project):
    etag = create(client, project).headers["etag"]
    assert_problem(client.delete(path("Order Completed"), headers=headers(project, **{"If-Match": '"r0"'})),
                   412, "precondition_failed")
    assert client.get(path("Order Completed"), headers=headers(project)).status_code == 200
    response = client.delete(path("Order Completed"), headers=headers(project, **{"If-Match": etag}))
    assert response.status_code == 204 and response.content == b""
    assert_problem(client.get(path("Order Completed"), headers=headers(project)), 404, "schema_not_found")
    assert_problem(client.delete(path("Order Completed"), headers=headers(project)), 404, "schema_not_found")
    assert_problem(client.delete(path("Order Completed"), headers=headers(project, **{"If-Match": etag})),
                   412, "precondition_failed")


def test_delete_then_recreate_starts_at_version_1_with_an_etag_never_seen(client, project):
    first = create(client, project).headers["etag"]
    second = client.put(path("Order Completed"), json={"schema": {}, "mode": "flag"}, headers=headers(project))
    assert client.delete(path("Order Completed"), headers=headers(project)).status_code == 204
    again = create(client, project)
    assert again.json()["version"] == 1
    assert again.headers["etag"] not in (first, second.headers["etag"])
    # The first ETag no longer matches, though the version number is 1 again.
    stale = client.delete(path("Order Completed"), headers=headers(project, **{"If-Match": first}))
    assert_problem(stale, 412, "precondition_failed")


def test_a_second_post_of_the_same_event_is_409_and_keeps_the_first(client, project):
    first = create(client, project, mode="enforce")
    response = client.post("/v1/schemas", json={"event": "Order Completed", "schema": {}, "mode": "flag"},
                           headers=headers(project))
    assert_problem(response, 409, "schema_exists")
    read = client.get(path("Order Completed"), headers=headers(project))
    assert read.json() == first.json() and read.headers["etag"] == first.headers["etag"]


def too_deep(levels: int) -> dict:
    schema: dict = {}
    for _ in range(levels):
        schema = {"not": schema}
    return schema


def padded(size: int) -> dict:
    """A schema of exactly `size` bytes as compact JSON."""
    base = {"type": "object", "description": ""}
    return {**base, "description": "x" * (size - len(orjson.dumps(base)))}


@pytest.mark.parametrize("body, code, location", [
    ({"schema": {"type": "nope"}}, "invalid_schema", None),
    ({"schema": {"$ref": "https://example.com/order.json"}}, "invalid_schema", None),
    ({"schema": {"$schema": "http://json-schema.org/draft-07/schema#"}}, "invalid_schema", None),
    ({"schema": {"properties": {"a": {"pattern": "(?<=a)b"}}}}, "invalid_schema", None),
    ({"schema": {"const": "a\u0000b"}}, "invalid_schema", None),
    ({"schema": too_deep(300)}, "invalid_schema", None),
    ({"schema": padded(MAX_SCHEMA_BYTES + 1)}, "schema_too_large", None),
    ({"schema": True}, "invalid_parameter", "body.schema"),
    ({"mode": "warn"}, "invalid_parameter", "body.mode"),
    ({"event": ""}, "invalid_parameter", "body.event"),
    ({"event": "e" * 201}, "invalid_parameter", "body.event"),
    ({"event": "a\u0000b"}, "invalid_parameter", "body.event"),
    ({"event": 5}, "invalid_parameter", "body.event"),
    ({"description": "d" * 2001}, "invalid_parameter", "body.description"),
    ({"owner": "growth"}, "invalid_parameter", "body.owner"),
])
def test_an_unusable_schema_or_field_is_422_saying_why_and_nothing_is_stored(client, project, body, code, location):
    full = {"event": "Checkout", "schema": ORDER, "mode": "flag", **body}
    problem = assert_problem(client.post("/v1/schemas", json=full, headers=headers(project)), 422, code)
    if location:
        assert [e["location"] for e in problem["errors"]] == [location]
    listed = client.get("/v1/schemas", headers=headers(project)).json()
    assert listed["data"] == []


def test_replacing_with_an_unusable_schema_is_422_and_keeps_the_version(client, project):
    create(client, project)
    for schema, code in (({"type": "nope"}, "invalid_schema"), (padded(MAX_SCHEMA_BYTES + 1), "schema_too_large")):
        response = client.put(path("Order Completed"), json={"schema": schema, "mode": "flag"}, headers=headers(project))
        assert_problem(response, 422, code)
    assert client.get(path("Order Completed"), headers=headers(project)).json()["version"] == 1


def test_the_size_cap_is_max_schema_bytes_of_compact_json_inclusive(client, project):
    create(client, project, event="At the cap", schema=padded(MAX_SCHEMA_BYTES))
    # Whitespace in the request body does not count: the schema is measured as compact JSON.
    pretty = orjson.dumps({"event": "Indented", "schema": padded(MAX_SCHEMA_BYTES), "mode": "flag"},
                          option=orjson.OPT_INDENT_2)
    response = client.post("/v1/schemas", content=pretty, headers=headers(project, **{"Content-Type": "application/json"}))
    assert response.status_code == 201, response.text


def test_a_body_that_is_not_json_is_400_on_post_and_put(client, project):
    create(client, project)
    for method, url in (("POST", "/v1/schemas"), ("PUT", path("Order Completed"))):
        for content in (b'{"event": "x", ', b"", b'{"event": "x", "schema": {"maximum": NaN}, "mode": "flag"}'):
            response = client.request(method, url, content=content,
                                      headers=headers(project, **{"Content-Type": "application/json"}))
            assert_problem(response, 400, "invalid_json")


def test_a_body_over_max_body_bytes_is_413(client, project):
    content = b'{"event": "x", "schema": {"description": "' + b"x" * (1024 * 1024) + b'"}, "mode": "flag"}'
    response = client.post("/v1/schemas", content=content, headers=headers(project, **{"Content-Type": "application/json"}))
    assert_problem(response, 413, "payload_too_large")


def test_every_endpoint_needs_a_token_with_scope_admin(client, project):
    create(client, project)
    calls = [
        ("POST", "/v1/schemas", {"event": "Other", "schema": {}, "mode": "flag"}),
        ("GET", "/v1/schemas", None),
        ("GET", path("Order Completed"), None),
        ("PUT", path("Order Completed"), {"schema": {}, "mode": "flag"}),
        ("DELETE", path("Order Completed"), None),
    ]
    for method, url, body in calls:
        assert_problem(client.request(method, url, json=body), 401, "invalid_token")
        refused = client.request(method, url, json=body, headers=headers(project, scopes="ingest query"))
        assert_problem(refused, 403, "insufficient_scope")
    read = client.get(path("Order Completed"), headers=headers(project))
    assert read.json()["version"] == 1
    assert client.get("/v1/schemas", headers=headers(project)).json()["data"] == [read.json()]


@pytest.mark.parametrize("event", [
    "Order Completed", "checkout/step/2", "/leading and trailing/", "a//b", "100% done?#frag&x=1",
    "ürün görüntülendi 🛒", "注文完了", "a\\b", "e" * 200, ".", "..",
])
def test_any_name_round_trips_through_its_percent_encoded_path(client, project, event):
    created = create(client, project, event=event)
    assert created.headers["location"] == path(event)
    url = created.headers["location"]
    read = client.get(url, headers=headers(project))
    assert read.status_code == 200 and read.json()["event"] == event
    replaced = client.put(url, json={"schema": {}, "mode": "flag"}, headers=headers(project, **{"If-Match": read.headers["etag"]}))
    assert replaced.status_code == 200 and replaced.json()["event"] == event
    assert client.delete(url, headers=headers(project)).status_code == 204
    assert client.get(url, headers=headers(project)).status_code == 404


def test_names_the_path_cannot_hold_are_refused_not_5xx(client, project):
    assert_problem(client.get("/v1/schemas/" + "e" * 201, headers=headers(project)), 422, "invalid_parameter")
    # NUL: Postgres text cannot hold it, so no schema can have such a name.
    assert_problem(client.get("/v1/schemas/a%00b", headers=headers(project)), 422, "invalid_parameter")
    assert_problem(client.delete("/v1/schemas/a%00b", headers=headers(project)), 422, "invalid_parameter")
    response = client.put("/v1/schemas/a%00b", json={"schema": {}, "mode": "flag"}, headers=headers(project))
    assert_problem(response, 422, "invalid_parameter")


NAMES = (
    ["Zebra", "apple", "Apple", "éclair", "eclair", "Ä", "a b", "a-b", "a_b", "a/b", "_x", "0 first", "9",
     "ünïcode", "日本", "🛒 cart", "Order Completed", "Order completed", "order_completed", "Ω", "z", "~tilde",
     "a", "ab", "b"]
)


def test_the_list_walks_every_name_once_in_byte_order(client, project):
    assert len(NAMES) == 25 and len(set(NAMES)) == 25
    for name in NAMES:
        create(client, project, event=name, mode="flag")
    seen, pages, cursor = [], 0, None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/schemas", params=params, headers=headers(project))
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["data"]) == (10 if page["next_cursor"] else 5)
        seen += [item["event"] for item in page["data"]]
        assert all(item["version"] == 1 and item["updated_by"] == "alice" for item in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    # Byte order of UTF-8 is code point order, which is how Python compares str.
    assert seen == sorted(NAMES, key=lambda name: name.encode())


def test_the_default_page_holds_up_to_100_and_limit_is_1_to_1000(client, project):
    for i in range(3):
        create(client, project, event=f"e{i}")
    page = client.get("/v1/schemas", headers=headers(project)).json()
    assert [item["event"] for item in page["data"]] == ["e0", "e1", "e2"] and page["next_cursor"] is None
    for limit in (0, 1001, "x"):
        response = client.get("/v1/schemas", params={"limit": limit}, headers=headers(project))
        assert_problem(response, 422, "invalid_parameter")


def test_an_altered_or_foreign_cursor_is_400(client, project):
    for i in range(3):
        create(client, project, event=f"e{i}")
    cursor = client.get("/v1/schemas", params={"limit": 1}, headers=headers(project)).json()["next_cursor"]
    assert cursor
    tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    other = "p_" + uuid.uuid4().hex[:12]
    cases = [(project, tampered), (other, cursor), (project, "not a cursor")]
    for who, sent in cases:
        response = client.get("/v1/schemas", params={"limit": 1, "cursor": sent}, headers=headers(who))
        assert_problem(response, 400, "invalid_cursor")
    resumed = client.get("/v1/schemas", params={"limit": 5, "cursor": cursor}, headers=headers(project))
    assert [item["event"] for item in resumed.json()["data"]] == ["e1", "e2"]


def test_another_project_can_neither_see_nor_change_a_schema_and_may_have_its_own(client, project):
    mine = create(client, project)
    other = "p_" + uuid.uuid4().hex[:12]
    theirs = headers(other, sub="mallory")
    assert_problem(client.get(path("Order Completed"), headers=theirs), 404, "schema_not_found")
    assert client.get("/v1/schemas", headers=theirs).json()["data"] == []
    assert_problem(client.put(path("Order Completed"), json={"schema": {}, "mode": "flag"}, headers=theirs),
                   404, "schema_not_found")
    with_my_etag = {**theirs, "If-Match": mine.headers["etag"]}
    assert_problem(client.put(path("Order Completed"), json={"schema": {}, "mode": "flag"}, headers=with_my_etag),
                   412, "precondition_failed")
    assert_problem(client.delete(path("Order Completed"), headers=with_my_etag), 412, "precondition_failed")
    assert_problem(client.delete(path("Order Completed"), headers=theirs), 404, "schema_not_found")

    own = client.post("/v1/schemas", json={"event": "Order Completed", "schema": {}, "mode": "flag"}, headers=theirs)
    assert own.status_code == 201 and own.json()["updated_by"] == "mallory"
    assert own.headers["etag"] != mine.headers["etag"]
    read = client.get(path("Order Completed"), headers=headers(project))
    assert read.json() == mine.json() and read.headers["etag"] == mine.headers["etag"]
    assert [item["schema"] for item in client.get("/v1/schemas", headers=theirs).json()["data"]] == [{}]


def test_the_ingest_role_serves_the_schema_list_with_its_cursors_and_the_query_role_does_not(database_url, project):
    with TestClient(create_app(make_settings(database_url, role="ingest")), raise_server_exceptions=False) as ingest:
        for name in ("a", "b"):
            create(ingest, project, event=name)
        first = ingest.get("/v1/schemas", params={"limit": 1}, headers=headers(project)).json()
        rest = ingest.get("/v1/schemas", params={"limit": 1, "cursor": first["next_cursor"]}, headers=headers(project))
        assert [item["event"] for item in first["data"] + rest.json()["data"]] == ["a", "b"]
    with TestClient(create_app(make_settings(database_url, role="query")), raise_server_exceptions=False) as query:
        assert_problem(query.get("/v1/schemas", headers=headers(project)), 404, "not_found")


def race(base: str, requests: list[tuple[str, str, dict, dict]]) -> list[httpx.Response]:
    """Send the requests at once from as many threads, released together; their responses in order."""
    barrier = threading.Barrier(len(requests))
    results: list[httpx.Response | None] = [None] * len(requests)

    def send(i: int, method: str, url: str, body: dict, extra: dict) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            http.get("/healthz")  # connect first, so the barrier releases requests, not handshakes
            barrier.wait()
            results[i] = http.request(method, url, json=body, headers=extra)

    threads = [threading.Thread(target=send, args=(i, *r)) for i, r in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results  # type: ignore[return-value]


def test_concurrent_creates_of_one_name_store_exactly_one(live_server, project):
    bodies = [{"event": "Signup", "schema": {}, "mode": "flag", "description": f"writer {i}"} for i in range(8)]
    responses = race(live_server, [("POST", "/v1/schemas", body, headers(project)) for body in bodies])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7
    winner = next(r for r in responses if r.status_code == 201).json()
    stored = httpx.get(live_server + path("Signup"), headers=headers(project)).json()
    assert stored == winner


def test_concurrent_replaces_with_one_etag_let_exactly_one_through(live_server, project):
    with httpx.Client(base_url=live_server) as http:
        etag = create(http, project, event="Signup").headers["etag"]
    bodies = [{"schema": {}, "mode": "flag", "description": f"writer {i}"} for i in range(8)]
    responses = race(live_server, [("PUT", path("Signup"), body, headers(project, **{"If-Match": etag})) for body in bodies])
    assert sorted(r.status_code for r in responses) == [200] + [412] * 7
    winner = next(r for r in responses if r.status_code == 200)
    stored = httpx.get(live_server + path("Signup"), headers=headers(project))
    assert stored.json() == winner.json() and stored.json()["version"] == 2
    assert stored.headers["etag"] == winner.headers["etag"]


def test_a_method_the_resource_lacks_is_405_listing_every_method_it_has(client, project):
    response = client.post(path("Order Completed"), json={}, headers=headers(project))
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET, PUT"
    assert client.patch("/v1/schemas", headers=headers(project)).headers["allow"] == "GET, POST"
