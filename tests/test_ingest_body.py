"""Reading the body and hostile input: content negotiation, bounded gzip, lying headers, bad JSON."""

from __future__ import annotations

import gzip
import json
import socket
import time
import uuid
from datetime import timezone
from urllib.parse import quote, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import auth_headers, make_batch, make_event


def stored_ids(db, project: str) -> set[str]:
    return {r[0] for r in db.execute("SELECT message_id FROM events WHERE project_id = %s", [project])}


def post_raw(client, auth, body: bytes, **headers: str):
    return client.post("/v1/batch", content=body, headers={**auth, "Content-Type": "application/json", **headers})


def codes(response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


# --- content negotiation ----------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain; charset=utf-8", "application/json; charset=UTF-8",
    # rudder-sdk-node's HTTP client labels its JSON so (and gzips it: see the gzip tests).
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=UTF-8",
])
def test_accepted_content_types_are_stored(client, auth, db, project, content_type):
    batch = make_batch(2)
    response = client.post("/v1/batch", content=json.dumps(batch), headers={**auth, "Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert stored_ids(db, project) == {e["messageId"] for e in batch["batch"]}


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "application/xml"}, {"Content-Type": "multipart/form-data; boundary=x"},
     {"Content-Encoding": "br"}, {"Content-Encoding": "deflate"}],
)
def test_unsupported_content_type_or_encoding_is_415_and_stores_nothing(client, auth, db, project, headers):
    response = post_raw(client, auth, json.dumps(make_batch(1)).encode(), **headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unsupported_media_type"
    assert stored_ids(db, project) == set()


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_body_that_really_is_form_encoded_is_415_naming_the_problem(client, auth, db, project, gzipped):
    body = ("data=" + quote(json.dumps(make_batch(1)))).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if gzipped:
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
    response = post_raw(client, auth, body, **headers)
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert "form-encoded" in response.json()["detail"]
    assert stored_ids(db, project) == set()


def test_gzipped_json_labelled_form_encoded_is_stored(client, auth, db, project):
    # What rudder-sdk-node sends with its defaults.
    batch = make_batch(2)
    body = gzip.compress(json.dumps(batch).encode())
    response = post_raw(client, auth, body, **{"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert stored_ids(db, project) == {e["messageId"] for e in batch["batch"]}


# --- gzip -------------------------------------------------------------------------------------


def test_gzip_body_is_decompressed_and_stored(client, auth, db, project):
    batch = make_batch(5)
    response = post_raw(client, auth, gzip.compress(json.dumps(batch).encode()), **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 5
    assert len(stored_ids(db, project)) == 5


def test_gzip_bomb_is_413_without_inflating_it(client, auth, db, project):
    bomb = gzip.compress(b"0" * 50_000_000, compresslevel=9)
    assert len(bomb) < 100_000
    started = time.monotonic()
    response = post_raw(client, auth, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "after decompression" in response.json()["detail"]
    assert time.monotonic() - started < 10  # bounded: it stops at the limit, not after 50 MB


def test_gzip_body_over_the_limit_after_decompression_is_413(client, auth, db, project):
    events = [make_event(properties={"pad": "a" * 30_000}) for _ in range(40)]  # ~1.2 MB, compresses well
    body = gzip.compress(json.dumps({"batch": events}).encode())
    assert len(body) < 100_000
    response = post_raw(client, auth, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert stored_ids(db, project) == set()


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(b'{"batch": []}')[:-12]], ids=["garbage", "truncated"])
def test_broken_gzip_is_400(client, auth, db, project, body):
    response = post_raw(client, auth, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


# --- lying Content-Length, over a real socket ---------------------------------------------------


def raw_http(base: str, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are over a socket; the answer read until the server closes or stalls."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request_bytes(project: str, body: bytes, content_length: int) -> bytes:
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth_headers(project)['Authorization']}\r\n"
        f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def test_content_length_shorter_than_the_body_reads_truncated_json_as_400(live_server, db, project):
    body = json.dumps(make_batch(2)).encode()
    response = raw_http(live_server, request_bytes(project, body, len(body) - 10))
    assert status_of(response) == 400
    assert stored_ids(db, project) == set()


def test_content_length_over_the_limit_is_413_before_the_body_is_read(live_server, db, project):
    body = json.dumps(make_batch(1)).encode()
    started = time.monotonic()
    response = raw_http(live_server, request_bytes(project, body, 50_000_000))
    assert status_of(response) == 413
    assert time.monotonic() - started < 10
    assert stored_ids(db, project) == set()


def batch_requests_by_status(base: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics").text):
        for sample in family.samples:
            if sample.name == "tally_http_requests_total" and sample.labels["route"] == "/v1/batch":
                counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0) + sample.value
    return counts


def test_body_cut_short_of_its_content_length_is_a_client_error_not_a_500(live_server, db, project):
    body = json.dumps(make_batch(1)).encode()
    before = batch_requests_by_status(live_server)
    url = urlsplit(live_server)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request_bytes(project, body, len(body) + 500))
        sock.shutdown(socket.SHUT_WR)  # the client gives up after sending less than it declared
        while sock.recv(65536):
            pass
    deadline = time.monotonic() + 10
    while (after := batch_requests_by_status(live_server)).get("400", 0) == before.get("400", 0):
        assert time.monotonic() < deadline, "the request was never recorded"
        time.sleep(0.05)
    assert after.get("400", 0) - before.get("400", 0) == 1
    assert after.get("500", 0) == before.get("500", 0)
    assert stored_ids(db, project) == set()


# --- hostile JSON -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"batch": [{"messageId": "a", "properties": {"x": NaN}}]}',
        b'{"batch": [{"messageId": "a", "properties": {"x": Infinity, "y": 123456789012345678901234567890}}]}',
        b'{"batch": [' + b'[' * 2000 + b']' * 1999 + b"]}",
        b'{"batch": [{"messageId": "\xff\xfe"}]}',
    ],
    ids=["NaN", "Infinity-exact-parser", "deep-2000-unbalanced", "invalid-utf8"],
)
def test_body_that_is_not_json_is_400_not_500(client, auth, db, project, body):
    response = post_raw(client, auth, body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_json"
    assert stored_ids(db, project) == set()


def batch_with(bad_event_json: bytes, good: dict) -> bytes:
    return b'{"batch": [' + bad_event_json + b", " + json.dumps(good).encode() + b"]}"


UNSTORABLE = {
    "integer-past-64-bits": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                            b'"properties": {"n": 123456789012345678901234567890}}',
    # Valid JSON numbers no double or 64-bit integer holds: the event alone is refused.
    "number-past-double-range": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                                b'"properties": {"x": 1e400}}',
    "negative-number-past-double-range": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                                         b'"properties": {"x": -1e400, "y": 123456789012345678901234567890}}',
    "integer-of-5000-digits": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                              b'"properties": {"n": ' + b"9" * 5000 + b"}}",
    "nul-in-properties": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "properties": {"s": "a\\u0000b"}}',
    "nul-in-a-key": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "properties": {"a\\u0000": 1}}',
    "nul-in-message-id": b'{"messageId": "m\\u00001", "userId": "u", "event": "e", "type": "track"}',
    "nul-in-user-id": b'{"messageId": "m1", "userId": "u\\u0000", "event": "e", "type": "track"}',
    "nul-in-event-name": b'{"messageId": "m1", "userId": "u", "event": "e\\u0000", "type": "track"}',
    "nul-in-extra": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "integrations": "\\u0000"}',
    "lone-surrogate-in-properties": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                                    b'"properties": {"s": "\\ud800"}}',
    "lone-surrogate-in-message-id": b'{"messageId": "m\\udc00", "userId": "u", "event": "e", "type": "track"}',
    "lone-surrogate-in-user-id": b'{"messageId": "m1", "userId": "\\ud83d", "event": "e", "type": "track"}',
    "lone-surrogate-in-event-name": b'{"messageId": "m1", "userId": "u", "event": "\\udfff", "type": "track"}',
    "too-deep-to-store": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "properties": '
                         + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}",
    # Deeper than the parsers recurse: read as a marker, not a whole-body RecursionError.
    "objects-5000-deep": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "properties": '
                         + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    "arrays-5000-deep": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "properties": {"a": '
                        + b"[" * 5000 + b"]" * 5000 + b"}}",
    "arrays-5000-deep-beside-a-long-integer": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                        b'"properties": {"n": 12345678901234567890123, "a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
    # Valid JSON that a double reads as 0: refused rather than stored as 0.0.
    "number-below-double-range": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                                 b'"properties": {"x": 1e-400}}',
    "negative-number-below-double-range": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                                          b'"properties": {"x": -2.5E-0330}}',
    "fraction-below-double-range": b'{"messageId": "m1", "userId": "u", "event": "e", "type": "track", '
                                   b'"properties": {"x": 0.' + b"0" * 400 + b"7}}",
}


@pytest.mark.parametrize("bad", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_value_that_cannot_be_stored_exactly_rejects_its_event_alone(client, auth, db, project, bad):
    good = make_event()
    response = post_raw(client, auth, batch_with(bad, good))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["errors"][0]["index"] == 0 and body["errors"][0]["code"] == "unstorable_value"
    assert stored_ids(db, project) == {good["messageId"]}


def test_values_that_only_look_unstorable_are_stored_exactly(client, auth, db, project):
    # Literal backslash-u0000 text, 64-bit integers at both ends, and a surrogate pair are all fine.
    body = (b'{"batch": [{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "properties": '
            b'{"text": "\\\\u0000", "big": 18446744073709551615, "small": -9223372036854775808, "emoji": "\\ud83d\\ude00"}}]}')
    response = post_raw(client, auth, body)
    assert response.json()["accepted"] == 1, response.text
    properties = db.execute("SELECT properties FROM events WHERE project_id = %s", [project]).fetchone()[0]
    assert properties == {"text": "\\u0000", "big": 18446744073709551615, "small": -9223372036854775808, "emoji": "😀"}


def test_numbers_near_zero_that_a_double_holds_and_text_that_looks_like_them_are_stored(client, auth, db, project):
    body = (b'{"batch": [{"messageId": "m1", "userId": "u", "event": "e", "type": "track", "properties": '
            b'{"zero": 0e-400, "negzero": -0.000e-999, "tiny": 5e-324, "small": 1.5e-300, "id": "a3e-1234-5", '
            b'"text": "1e-400"}}]}')
    response = post_raw(client, auth, body)
    assert response.json()["accepted"] == 1, response.text
    properties = db.execute("SELECT properties FROM events WHERE project_id = %s", [project]).fetchone()[0]
    assert properties == {"zero": 0, "negzero": 0, "tiny": 5e-324, "small": 1.5e-300, "id": "a3e-1234-5", "text": "1e-400"}


# --- property: random events never 5xx and the counts add up -------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(st.characters(exclude_categories=()), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
timestamps = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | json_values
events = st.fixed_dictionaries(
    {},
    optional={
        "messageId": st.sampled_from(["a", "b", "c", "d"]) | json_values,
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "bogus"]) | json_values,
        "userId": st.text(max_size=6) | st.integers() | json_values,
        "anonymousId": st.text(max_size=6) | json_values,
        "event": st.text(max_size=6) | json_values,
        "timestamp": timestamps,
        "properties": st.dictionaries(st.text(max_size=4), json_values, max_size=3) | json_values,
        "context": st.dictionaries(st.text(max_size=4), json_values, max_size=3) | json_values,
        "traits": json_values,
        "integrations": json_values,
    },
) | json_values


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events, min_size=1, max_size=12), sent_at=st.none() | st.datetimes(timezones=st.just(timezone.utc)))
def test_random_events_never_5xx_and_counts_add_up(client, db, batch, sent_at):
    project = "p_" + uuid.uuid4().hex[:12]
    body = {"batch": batch, **({"sentAt": sent_at.isoformat()} if sent_at else {})}
    # ensure_ascii keeps lone surrogates as \\u escapes, as a hostile client would send them.
    response = client.post("/v1/batch", content=json.dumps(body).encode(), headers=auth_headers(project))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] + result["duplicates"] + result["rejected"] == len(batch)
    assert len(result["errors"]) == result["rejected"]
    assert len(stored_ids(db, project)) == result["accepted"]


def test_gzip_body_of_two_members_stores_both(client, auth, db, project):
    first, second = make_event(), make_event()
    # The same JSON split across two gzip members: a conforming decoder reads both.
    raw = json.dumps({"batch": [first, second]}).encode()
    body = gzip.compress(raw[:40]) + gzip.compress(raw[40:])
    response = post_raw(client, auth, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert stored_ids(db, project) == {first["messageId"], second["messageId"]}


def test_junk_after_the_gzip_stream_is_400_and_stores_nothing(client, auth, db, project):
    body = gzip.compress(json.dumps(make_batch(2)).encode()) + b"trailing junk"
    response = post_raw(client, auth, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert stored_ids(db, project) == set()
