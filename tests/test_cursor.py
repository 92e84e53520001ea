"""Cursors: opaque, signed, bound to project and filters; paging returns each row exactly once."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import cursor
from tally.app import create_app
from tests.factories import auth_headers, make_event
from tests.helpers import make_settings

UTC = timezone.utc
KEY = b"k" * 32
SCOPE = cursor.scope_of("events", user=None)
HOUR_PARAMS = {"from": "2026-01-10", "to": "2026-01-12", "interval": "hour", "limit": 3}


@pytest.fixture(scope="module")
def walked(client):
    """One project with events over two days, six names, ties on timestamps."""
    project = "p_" + uuid.uuid4().hex[:12]
    auth = auth_headers(project)
    base = datetime(2026, 1, 10, tzinfo=UTC)
    events = [
        make_event(event=f"E{i % 6}", userId=f"u{i % 11}", timestamp=(base + timedelta(minutes=37 * (i // 2))).isoformat())
        for i in range(160)
    ]
    assert client.post("/v1/batch", json={"batch": events}, headers=auth).status_code == 200
    return project, auth


def first_cursor(client, auth, path="/v1/aggregates", **params) -> str:
    body = client.get(path, params=params, headers=auth).json()
    assert body["next_cursor"] is not None
    return body["next_cursor"]


def assert_invalid_cursor(response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_cursor"


# --- the codec ---------------------------------------------------------------------------------


position = st.lists(st.one_of(st.integers(min_value=0, max_value=2**62), st.text(max_size=200)), min_size=1, max_size=4)


@given(position=position, project=st.text(min_size=1, max_size=64))
def test_cursor_round_trips_and_is_url_safe(position, project):
    token = cursor.issue(KEY, project, SCOPE, position)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert cursor.open_cursor(KEY, project, SCOPE, token) == position


@given(position=position, data=st.data())
def test_any_changed_byte_of_a_cursor_is_rejected(position, data):
    raw = bytearray(base64.urlsafe_b64decode(cursor.issue(KEY, "p", SCOPE, position) + "=="))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(cursor.InvalidCursor):
        cursor.open_cursor(KEY, "p", SCOPE, altered)


@given(position=position, data=st.data())
def test_any_changed_character_of_a_cursor_is_rejected(position, data):
    token = cursor.issue(KEY, "p", SCOPE, position)
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("Aa0-_+/=.~ ").filter(lambda c: c != token[index]))
    with pytest.raises(cursor.InvalidCursor):
        cursor.open_cursor(KEY, "p", SCOPE, token[:index] + replacement + token[index + 1 :])


def test_cursor_is_bound_to_key_project_and_scope():
    token = cursor.issue(KEY, "p", SCOPE, [1, "x"])
    for key, project, scope in (
        (b"other" * 8, "p", SCOPE), (KEY, "q", SCOPE), (KEY, "p", cursor.scope_of("events", user="u")),
        (KEY, "p", cursor.scope_of("aggregates", user=None)),
    ):
        with pytest.raises(cursor.InvalidCursor):
            cursor.open_cursor(key, project, scope, token)


# --- over HTTP: every tampering case is a 400 --------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-1],
        lambda c: c + "A",
        lambda c: c[:10],
        lambda c: "",
        lambda c: "not a cursor!",
        lambda c: c[::-1],
        lambda c: c.replace(c[5], "A" if c[5] != "A" else "B", 1),
        lambda c: base64.urlsafe_b64encode(b"\x01[1,2,3,\"x\"]" + b"\x00" * 16).decode().rstrip("="),
        lambda c: base64.urlsafe_b64encode(b"\x02" + base64.urlsafe_b64decode(c + "==")[1:]).decode().rstrip("="),
        lambda c: "A" * 5000,
        lambda c: "%00%ff",
        lambda c: "Ω" * 10,
    ],
    ids=["truncated", "extended", "prefix", "empty", "garbage", "reversed", "changed", "forged", "version",
         "huge", "control", "non-ascii"],
)
def test_tampered_aggregate_cursor_is_400_invalid_cursor(client, walked, mangle):
    _, auth = walked
    token = first_cursor(client, auth, **HOUR_PARAMS)
    assert_invalid_cursor(client.get("/v1/aggregates", params={**HOUR_PARAMS, "cursor": mangle(token)}, headers=auth))


@pytest.mark.parametrize(
    "change",
    [{"interval": "day"}, {"tz": "Europe/Paris"}, {"event": "E1"}, {"metrics": "count,unique_users"},
     {"from": "2026-01-09"}, {"to": "2026-01-13"}],
)
def test_aggregate_cursor_reused_with_other_filters_is_400(client, walked, change):
    _, auth = walked
    token = first_cursor(client, auth, **HOUR_PARAMS)
    assert_invalid_cursor(client.get("/v1/aggregates", params={**HOUR_PARAMS, **change, "cursor": token}, headers=auth))


def test_cursor_of_another_project_or_endpoint_is_400(client, walked):
    _, auth = walked
    other = auth_headers("p_" + uuid.uuid4().hex[:12])
    aggregate_token = first_cursor(client, auth, **HOUR_PARAMS)
    events_token = first_cursor(client, auth, "/v1/events", limit=2)
    assert_invalid_cursor(client.get("/v1/aggregates", params={**HOUR_PARAMS, "cursor": aggregate_token}, headers=other))
    assert_invalid_cursor(client.get("/v1/events", params={"limit": 2, "cursor": events_token}, headers=other))
    assert_invalid_cursor(client.get("/v1/events", params={"limit": 2, "cursor": aggregate_token}, headers=auth))
    assert_invalid_cursor(client.get("/v1/aggregates", params={**HOUR_PARAMS, "cursor": events_token}, headers=auth))


@pytest.mark.parametrize("change", [{"event": "E1"}, {"user": "u1"}, {"type": "identify"}, {"from": "2026-01-01"}])
def test_events_cursor_reused_with_other_filters_is_400(client, walked, change):
    _, auth = walked
    token = first_cursor(client, auth, "/v1/events", limit=2)
    assert_invalid_cursor(client.get("/v1/events", params={"limit": 2, **change, "cursor": token}, headers=auth))


def test_page_size_may_change_between_pages(client, walked):
    _, auth = walked
    token = first_cursor(client, auth, **HOUR_PARAMS)
    response = client.get("/v1/aggregates", params={**HOUR_PARAMS, "limit": 50, "cursor": token}, headers=auth)
    assert response.status_code == 200


# --- paging property ---------------------------------------------------------------------------


def collect(client, auth, path, params, limit):
    rows, token = [], None
    while True:
        body = client.get(path, params={**params, "limit": limit, **({"cursor": token} if token else {})}, headers=auth).json()
        rows += body["data"]
        token = body["next_cursor"]
        if token is None:
            return rows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(1, 40),
    query=st.sampled_from([
        ("/v1/aggregates", {"from": "2026-01-10", "to": "2026-01-12", "interval": "hour"}),
        ("/v1/aggregates", {"from": "2026-01-10T05:30:00", "to": "2026-01-12", "interval": "day", "tz": "Asia/Kolkata",
                            "metrics": "count,unique_users"}),
        ("/v1/aggregates", {"from": "2026-01-10", "to": "2026-01-12", "interval": "total"}),
        ("/v1/events", {}),
        ("/v1/events", {"event": "E2"}),
    ]),
)
def test_paging_with_any_page_size_returns_the_unpaged_list(client, walked, limit, query):
    _, auth = walked
    path, params = query
    assert collect(client, auth, path, params, limit) == collect(client, auth, path, params, 1000)


# --- the key -----------------------------------------------------------------------------------


def test_app_with_only_public_keys_needs_a_cursor_secret_in_every_role(database_url, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    keys = tmp_path / "public.pem"
    keys.write_bytes(pem)
    public_only = make_settings(database_url, jwt_public_keys=keys).model_copy(update={"jwt_secret": None})
    # query listings page with cursors, and so does the schema list served with ingest
    for role in ("all", "ingest", "query"):
        with pytest.raises(ValueError, match="TALLY_CURSOR_SECRET"):
            create_app(public_only.model_copy(update={"role": role}))
    create_app(make_settings(database_url, jwt_public_keys=keys, cursor_secret="s" * 32).model_copy(update={"jwt_secret": None}))


def test_cursor_key_is_the_cursor_secret_else_derived_not_the_jwt_secret(database_url):
    derived = cursor.signing_key(make_settings(database_url))
    assert derived != make_settings(database_url).jwt_secret.get_secret_value().encode()
    assert cursor.signing_key(make_settings(database_url, cursor_secret="c" * 32)) == b"c" * 32
