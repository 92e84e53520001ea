"""Tenancy: a token of project A can neither read, write nor learn of project B's data, on any route.

One matrix over every (method, path template) the app mounts, read from create_app(...).routes at
collection: a route added without a case in CASES fails. Project B is seeded once (events of every
type, two Idempotency-Key requests on every ingest route, a cursor per listing, a revoked token);
each case runs under a fresh project A whose token has every scope and sends every parameter,
path, cursor, id and key it knows of B; afterwards B's stored rows must be exactly as seeded.

Narrower tests elsewhere cover parts of this for one route each, and stay there:
test_query_events.test_listing_never_shows_another_projects_events,
test_query_aggregates.test_aggregates_never_show_another_projects_events,
test_cursor.test_cursor_of_another_project_or_endpoint_is_400,
test_ingest_idempotency.test_same_key_in_another_project_is_independent, and test_revocation
(the same jti in another project still works, over two real workers).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import jwt
import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import idempotency
from tally.app import create_app
from tests.factories import SECRET, auth_headers, make_event
from tests.helpers import make_settings


def mounted_routes(routes, prefix: str = "") -> set[tuple[str, str]]:
    """(method, path template) of every route, through FastAPI's included-router wrappers."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            found |= mounted_routes(included.routes, prefix + route.include_context.prefix)
        else:
            found |= {(method, prefix + route.path) for method in route.methods}
    return found


# Collection needs no database: create_app builds the pool unopened.
ROUTES = sorted(mounted_routes(create_app(make_settings("postgresql://collect-only@127.0.0.1:1/none", role="all")).routes))

# Each ingest path, and what it takes: a batch (None) or one event of that type.
INGEST_KINDS = {
    "/v1/batch": None, "/v1/b": None, "/v1/import": None, "/beacon/v1/batch": None,
    **{f"/v1/{kind}": kind for kind in ("track", "identify", "page", "screen", "group", "alias")},
    **{f"/v1/{kind[0]}": kind for kind in ("track", "identify", "page", "screen", "group", "alias")},
}
INGEST_PATHS = tuple(INGEST_KINDS)
# B's data lives in these two days; every read of A asks for at least this range.
WINDOW = {"from": "2026-06-01", "to": "2026-06-03"}
A_EVENT = "A Signed Up"
A_USER = "a-user-of-tenancy"
PROJECT_ID = re.compile(r"p_[0-9a-f]{8,}")


def token_with_jti(project: str, jti: str, scopes: str = "ingest query admin") -> str:
    now = int(time.time())
    claims = {"sub": "tenancy", "project": project, "scope": scopes, "aud": "tally", "iat": now, "exp": now + 600, "jti": jti}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class ProjectB:
    id: str
    token: str
    live_jti: str
    revoked_jti: str
    tag: str
    # ingest path -> the two bodies B sent there, with Idempotency-Keys key(path, 1) and key(path, 2)
    requests: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    # listing path -> (params, the next_cursor B was given for them)
    cursors: dict[str, tuple[dict, str]] = field(default_factory=dict)
    message_ids: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    # tracking-plan event name -> the ETag B was given for its schema
    schemas: dict[str, str] = field(default_factory=dict)
    erasures: list[str] = field(default_factory=list)  # B's erasure job ids
    suppressed: list[str] = field(default_factory=list)  # ids B suppressed (never ids of B's events)
    stored: dict = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)

    def key(self, path: str, n: int | str) -> str:
        return f"b-{self.tag}-{path.strip('/').replace('/', '.')}-{n}"

    def naming(self, key: bool = True) -> dict[str, str]:
        """Fields a client might hope select a project: each names B (`writeKey`: B's token,
        which in an ingest body beside another project's Authorization is refused)."""
        fields = {"project": self.id, "projectId": self.id, "project_id": self.id}
        return {**fields, "writeKey": self.token} if key else fields

    def identifiers(self) -> set[str]:
        keys = {self.key(p, n) for p in INGEST_PATHS for n in (1, 2, "in-flight")}
        # "$identify" and the like are every project's names for non-track events, not B's data.
        names = [name for name in self.names if not name.startswith("$")]
        return {self.id, self.live_jti, self.revoked_jti, *self.message_ids, *self.users, *names, *self.schemas, *keys,
                *self.erasures, *self.suppressed}


def stored(db: psycopg.Connection, project: str) -> dict[str, list]:
    """Everything a project owns in the database. Counts are hourly rollups plus unfolded deltas,
    read in one statement so a concurrent fold is seen either before or after, never half."""
    return {
        "events": db.execute(
            "SELECT message_id, type, event, user_id, anonymous_id, ts, received_at, properties, context, extra "
            "FROM events WHERE project_id = %s ORDER BY message_id", [project],
        ).fetchall(),
        "counts": db.execute(
            "SELECT bucket, event, sum(n) FROM (SELECT bucket, event, n FROM event_counts_hourly WHERE project_id = %(p)s "
            "UNION ALL SELECT bucket, event, n FROM event_count_deltas WHERE project_id = %(p)s) AS c "
            "GROUP BY 1, 2 ORDER BY 1, 2", {"p": project},
        ).fetchall(),
        "idempotency_keys": db.execute(
            "SELECT key, fingerprint, status, body, created_at FROM idempotency_keys WHERE project_id = %s ORDER BY key",
            [project],
        ).fetchall(),
        "revoked_tokens": db.execute(
            "SELECT jti, revoked_at, expires_at FROM revoked_tokens WHERE project_id = %s ORDER BY jti", [project]
        ).fetchall(),
        "event_schemas": db.execute(
            "SELECT event, schema, mode, description, version, revision, created_at, updated_at, updated_by "
            "FROM event_schemas WHERE project_id = %s ORDER BY event", [project],
        ).fetchall(),
        "projects": db.execute("SELECT settings, updated_at, updated_by FROM projects WHERE project_id = %s", [project]).fetchall(),
        "erasures": db.execute("SELECT * FROM erasures WHERE project_id = %s ORDER BY id", [project]).fetchall(),
        "suppressions": db.execute("SELECT * FROM suppressions WHERE project_id = %s ORDER BY user_id", [project]).fetchall(),
    }


def post_raw(client, path: str, body: bytes, headers: dict[str, str]):
    return client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


def wait_until_refused(client, headers: dict[str, str]) -> None:
    """The app reloads revocations each second; the contract is within 2 s."""
    deadline = time.monotonic() + 3
    while client.get("/v1/events", params={"limit": 1}, headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "revocation not in force after 3 s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def b(client, database_url) -> ProjectB:
    tag = uuid.uuid4().hex[:10]
    project = f"p_{tag}"
    live_jti, revoked_jti = f"b-live-{tag}", f"b-revoked-{tag}"
    seeded = ProjectB(project, token_with_jti(project, live_jti), live_jti, revoked_jti, tag)
    counter = iter(range(1000))

    def event(kind: str, slash: bool = False) -> dict:
        i = next(counter)
        return make_event(
            type=kind, messageId=f"b-{tag}/{kind}/{i}" if slash else f"b-{tag}-{kind}-{i}",
            userId=f"b-user-{tag}-{i % 2}", anonymousId=f"b-anon-{tag}",
            event=f"B Checkout {tag}" if kind == "track" else None,
            timestamp=f"2026-06-0{1 + i % 2}T{(6 + i) % 24:02d}:30:00Z",
            properties={"owner": "B"}, project=project, projectId=project,
        )

    for path, kind in INGEST_KINDS.items():
        bodies = []
        for n in (1, 2):
            if kind is None:
                body = {"batch": [event("track"), event("identify"), event("track", slash=True)], **seeded.naming(key=False)}
            else:
                body = {**event(kind), **seeded.naming(key=False)}
            raw = orjson.dumps(body)
            response = post_raw(client, path, raw, {**seeded.auth, "Idempotency-Key": seeded.key(path, n)})
            assert response.status_code == 200 and response.json()["rejected"] == 0, response.text
            bodies.append(raw)
        seeded.requests[path] = (bodies[0], bodies[1])

    for path, params in (("/v1/aggregates", {**WINDOW, "interval": "hour", "limit": 1}), ("/v1/events", {"limit": 1})):
        response = client.get(path, params=params, headers=seeded.auth)
        assert response.status_code == 200 and response.json()["next_cursor"], response.text
        seeded.cursors[path] = (params, response.json()["next_cursor"])

    # Schemas that check nothing B sends (flag, any object): B's later requests are unaffected.
    for name in (f"B Checkout {tag}", f"b-plan-{tag}/with slash"):
        response = client.post("/v1/schemas", json={"event": name, "schema": {"type": "object"}, "mode": "flag"},
                               headers=seeded.auth)
        assert response.status_code == 201, response.text
        seeded.schemas[name] = response.headers["etag"]
    response = client.get("/v1/schemas", params={"limit": 1}, headers=seeded.auth)
    assert response.status_code == 200 and response.json()["next_cursor"], response.text
    seeded.cursors["/v1/schemas"] = ({"limit": 1}, response.json()["next_cursor"])

    response = client.post("/v1/tokens/revoked", json={"jti": revoked_jti}, headers=seeded.auth)
    assert response.status_code == 200, response.text
    wait_until_refused(client, bearer(token_with_jti(project, revoked_jti)))

    # The lifecycle: a retention long enough to keep B's June events, and two erasure jobs of
    # ids B never sent events for (one suppressing them), waited for until done.
    response = client.patch("/v1/project", json={"retention_days": 36500}, headers=seeded.auth)
    assert response.status_code == 200, response.text
    seeded.suppressed = [f"b-erased-{tag}-1", f"b-erased-{tag}/2"]
    for users, suppress in ((seeded.suppressed, True), ([f"b-erased-{tag}-3"], False)):
        response = client.post("/v1/erasures", json={"users": users, "suppress": suppress},
                               headers={**seeded.auth, "Idempotency-Key": seeded.key("/v1/erasures", len(seeded.erasures))})
        assert response.status_code == 202, response.text
        seeded.erasures.append(response.json()["id"])
    deadline = time.monotonic() + 30
    while any(client.get(f"/v1/erasures/{i}", headers=seeded.auth).json()["status"] != "done" for i in seeded.erasures):
        assert time.monotonic() < deadline, "B's erasures did not finish in 30 s"
        time.sleep(0.2)
    for path in ("/v1/erasures", "/v1/suppressions"):
        response = client.get(path, params={"limit": 1}, headers=seeded.auth)
        assert response.status_code == 200 and response.json()["next_cursor"], response.text
        seeded.cursors[path] = ({"limit": 1}, response.json()["next_cursor"])

    with psycopg.connect(database_url, autocommit=True) as db:
        seeded.stored = stored(db, project)
    rows = seeded.stored["events"]
    seeded.message_ids = [r[0] for r in rows]
    seeded.users = sorted({r[3] for r in rows} | {r[4] for r in rows})
    seeded.names = sorted({r[2] for r in rows})
    assert len(rows) == 2 * (4 * 3 + 12) and len(seeded.names) == 6  # B's track name and five "$type" names
    return seeded


def seed_a(client, auth: dict[str, str]) -> list[str]:
    """Two events of A inside B's window, so A's reads are not trivially empty."""
    events = [make_event(event=A_EVENT, userId=A_USER, timestamp=t) for t in ("2026-06-01T09:15:00Z", "2026-06-01T09:45:00Z")]
    response = client.post("/v1/batch", json={"batch": events}, headers=auth)
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text
    return sorted(e["messageId"] for e in events)


def assert_invalid_cursor(response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_cursor"


def without_request_id(response) -> dict:
    return {k: v for k, v in response.json().items() if k != "request_id"}


# --- cases: one per (method, path template) ----------------------------------------------------


def ingest_case(path: str) -> Callable:
    def case(client, db, b: ProjectB, a: str) -> None:
        auth = auth_headers(a)
        first, second = b.requests[path]
        # 1. B's messageIds and B's first key, with A's own properties: were B's key visible,
        #    this would be 422 idempotency_key_mismatch; were B's ids, they would be duplicates.
        # 0. B's token as the body's writeKey beside A's Authorization: refused, nothing stored.
        refused = post_raw(client, path, orjson.dumps({**orjson.loads(first), "writeKey": b.token}), auth)
        assert refused.status_code == 401 and refused.json()["code"] == "invalid_token", refused.text
        batch = INGEST_KINDS[path] is None
        mine = orjson.loads(first)
        for event in mine["batch"] if batch else [mine]:
            event["properties"] = {"owner": "A"}
        # 2. B's exact bytes under B's second key: were B's key visible, B's response is replayed.
        # 3. A key B holds in flight (its advisory lock taken): were it shared, 409 idempotency_key_in_use.
        third = orjson.loads(orjson.dumps(mine))
        for event in third["batch"] if batch else [third]:
            event["messageId"] = f"a-{uuid.uuid4().hex}"
        lock = idempotency.TRY_LOCK_IDEMPOTENCY_KEY.replace("pg_try_advisory_xact_lock", "pg_advisory_xact_lock")
        sent = [(orjson.dumps(mine), b.key(path, 1)), (second, b.key(path, 2)), (orjson.dumps(third), b.key(path, "in-flight"))]
        with db.transaction():
            db.execute(lock, {"project": b.id, "key": b.key(path, "in-flight")})
            for body, key in sent:
                n = len(orjson.loads(body).get("batch", [None]))
                response = post_raw(client, path, body, {**auth, "Idempotency-Key": key})
                assert response.status_code == 200, response.text
                assert "idempotent-replayed" not in response.headers
                assert response.json() == {"success": True, "accepted": n, "duplicates": 0, "rejected": 0, "errors": []}

        def ids(body: dict) -> list[str]:
            return [e["messageId"] for e in body.get("batch", [body])]

        # Stored as A's: A's properties where A sent its own, B's bytes where A sent those.
        owners = db.execute("SELECT message_id, properties->>'owner' FROM events WHERE project_id = %s", [a]).fetchall()
        assert dict(owners) == {**dict.fromkeys(ids(mine) + ids(third), "A"), **dict.fromkeys(ids(orjson.loads(second)), "B")}
        keys = db.execute("SELECT key FROM idempotency_keys WHERE project_id = %s ORDER BY key", [a]).fetchall()
        assert [k for (k,) in keys] == sorted(key for _, key in sent)
        # B's own retry still replays B's stored answer.
        again = post_raw(client, path, first, {**b.auth, "Idempotency-Key": b.key(path, 1)})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"

    return case


def list_events_case(client, db, b: ProjectB, a: str) -> None:
    auth = auth_headers(a)
    mine = seed_a(client, auth)

    def ids(**params) -> list[str]:
        response = client.get("/v1/events", params=params, headers=auth)
        assert response.status_code == 200, response.text
        return sorted(e["messageId"] for e in response.json()["data"])

    assert ids() == ids(**WINDOW) == ids(**b.naming()) == ids(**b.naming(), limit=1000) == mine
    for user in b.users:
        assert ids(user=user) == []
    for name in b.names:
        assert ids(event=name) == []
    for kind in ("identify", "page", "screen", "group", "alias"):
        assert ids(type=kind) == []
    params, cursor = b.cursors["/v1/events"]
    assert_invalid_cursor(client.get("/v1/events", params={**params, "cursor": cursor}, headers=auth))
    assert_invalid_cursor(client.get("/v1/events", params={**params, **b.naming(), "cursor": cursor}, headers=auth))


def aggregates_case(client, db, b: ProjectB, a: str) -> None:
    auth = auth_headers(a)
    seed_a(client, auth)

    def rows(**params) -> list[tuple]:
        response = client.get("/v1/aggregates", params={**WINDOW, "metrics": "count,unique_users", **params}, headers=auth)
        assert response.status_code == 200, response.text
        return [(r["event"], r["count"], r["unique_users"]) for r in response.json()["data"]]

    for interval in ("hour", "day", "total"):
        assert rows(interval=interval) == rows(interval=interval, **b.naming()) == [(A_EVENT, 2, 1)]
        assert rows(interval=interval, event=b.names) == []
    params, cursor = b.cursors["/v1/aggregates"]
    assert_invalid_cursor(client.get("/v1/aggregates", params={**params, "cursor": cursor}, headers=auth))
    assert_invalid_cursor(client.get("/v1/aggregates", params={**params, **b.naming(), "cursor": cursor}, headers=auth))


def event_by_id_case(client, db, b: ProjectB, a: str) -> None:
    auth = auth_headers(a)
    mine = seed_a(client, auth)
    assert client.get(f"/v1/events/{mine[0]}", headers=auth).json()["messageId"] == mine[0]
    never = client.get(f"/v1/events/never-stored-{uuid.uuid4().hex}", headers=auth)
    assert never.status_code == 404
    for message_id in b.message_ids:
        for path in {quote(message_id, safe=""), quote(message_id, safe="/")}:
            for query in ("", "?" + urlencode(b.naming())):
                response = client.get(f"/v1/events/{path}{query}", headers=auth)
                assert response.status_code == 404, (message_id, response.text)
                # The very answer given for an id stored nowhere: B's ids are not even hinted at.
                assert without_request_id(response) == without_request_id(never)


def revoke_case(client, db, b: ProjectB, a: str) -> None:
    auth = auth_headers(a)
    # B's revocation refuses B's token only: A's token with the same jti is accepted.
    assert client.get("/v1/events", headers=bearer(token_with_jti(a, b.revoked_jti))).status_code == 200
    response = client.post("/v1/tokens/revoked", json={"jti": b.live_jti, **b.naming()}, headers=auth)
    assert response.status_code == 200, response.text
    assert (response.json()["project"], response.json()["jti"]) == (a, b.live_jti)
    assert db.execute("SELECT project_id FROM revoked_tokens WHERE jti = %s", [b.live_jti]).fetchall() == [(a,)]
    # Once the revocation is in force (A's token with that jti refused), B's token still works.
    wait_until_refused(client, bearer(token_with_jti(a, b.live_jti)))
    listing = client.get("/v1/events", params={"limit": 1000}, headers=b.auth)
    assert listing.status_code == 200
    assert sorted(e["messageId"] for e in listing.json()["data"]) == sorted(b.message_ids)
    assert client.get("/v1/events", headers=bearer(token_with_jti(b.id, b.revoked_jti))).status_code == 401


def schema_path(event: str) -> str:
    return "/v1/schemas/" + quote(event, safe="")


def stranger() -> dict[str, str]:
    """A project that never had a schema: A must get for B's names the very answers it gets."""
    return auth_headers(f"p_{uuid.uuid4().hex[:12]}")


def create_schema_case(client, db, b: ProjectB, a: str) -> None:
    auth = auth_headers(a)
    for name, etag in b.schemas.items():
        # B's name is free in A's project: A gets its own schema, a new ETag, version 1.
        response = client.post("/v1/schemas", json={"event": name, "schema": {}, "mode": "enforce"}, headers=auth)
        assert response.status_code == 201, response.text
        assert response.json()["version"] == 1 and response.headers["etag"] != etag
        # A body naming B is refused (unknown keys), not read as a project.
        named = client.post("/v1/schemas", json={"event": f"a-{name}", "schema": {}, "mode": "flag", **b.naming()},
                            headers=auth)
        assert named.status_code == 422 and named.json()["code"] == "invalid_parameter"
    rows = db.execute("SELECT event, mode FROM event_schemas WHERE project_id = %s ORDER BY event", [a]).fetchall()
    assert rows == sorted((name, "enforce") for name in b.schemas)


def list_schemas_case(client, db, b: ProjectB, a: str) -> None:
    auth = auth_headers(a)
    assert client.post("/v1/schemas", json={"event": A_EVENT, "schema": {}, "mode": "flag"}, headers=auth).status_code == 201
    for params in ({}, b.naming(), {"limit": 1000, **b.naming()}):
        response = client.get("/v1/schemas", params=params, headers=auth)
        assert response.status_code == 200, response.text
        assert [item["event"] for item in response.json()["data"]] == [A_EVENT]
    params, cursor = b.cursors["/v1/schemas"]
    assert_invalid_cursor(client.get("/v1/schemas", params={**params, "cursor": cursor}, headers=auth))
    assert_invalid_cursor(client.get("/v1/schemas", params={**params, **b.naming(), "cursor": cursor}, headers=auth))


def read_schema_case(client, db, b: ProjectB, a: str) -> None:
    auth = auth_headers(a)
    for name, etag in b.schemas.items():
        for extra in ({}, {"If-None-Match": etag}):
            response = client.get(schema_path(name), headers={**auth, **extra})
            assert response.status_code == 404, response.text
            same = client.get(schema_path(name), headers={**stranger(), **extra})
            assert without_request_id(response) == without_request_id(same)


def change_schema_case(method: str) -> Callable:
    def case(client, db, b: ProjectB, a: str) -> None:
        auth = auth_headers(a)
        body = {"json": {"schema": {}, "mode": "enforce"}} if method == "PUT" else {}
        for name, etag in b.schemas.items():
            # Without If-Match: 404; with B's ETag or `*`: 412, as for a name no one ever had.
            for extra in ({}, {"If-Match": etag}, {"If-Match": "*"}):
                response = client.request(method, schema_path(name), headers={**auth, **extra}, **body)
                assert response.status_code == (412 if extra else 404), response.text
                same = client.request(method, schema_path(name), headers={**stranger(), **extra}, **body)
                assert without_request_id(response) == without_request_id(same)
        assert db.execute("SELECT count(*) FROM event_schemas WHERE project_id = %s", [a]).fetchone()[0] == 0

    return case


def project_free_case(method: str, path: str) -> Callable:
    """Ops and documentation routes: the same answer whoever asks, naming no project's data."""

    def case(client, db, b: ProjectB, a: str) -> None:
        auth = auth_headers(a)
        seed_a(client, auth)  # A has been seen by the app (requests, logs, metrics) before it asks
        client.get("/v1/events", params={"user": A_USER}, headers=auth)
        answers = [client.request(method, path, headers=headers) for headers in ({}, auth, b.auth)]
        identifiers = b.identifiers() | {a, A_USER}
        for response in answers:
            assert response.status_code == 200, response.text
            shown = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            assert [i for i in identifiers if i in shown] == []
        if path == "/metrics":
            labels = {
                value for family in text_string_to_metric_families(answers[-1].text)
                for sample in family.samples for value in sample.labels.values()
            }
            assert labels and not labels & identifiers
            assert [value for value in labels if PROJECT_ID.search(value)] == []
        else:
            assert answers[0].content == answers[1].content == answers[2].content

    return case


def vendor_case(path: str) -> Callable:
    """Another vendor's format: A's events carrying B's message ids as their vendor ids and B's
    naming fields are stored as A's, and B's stay as they were (checked after every case)."""

    def body_for(token: str, ids: list[str], b: ProjectB) -> tuple[bytes, dict[str, str]]:
        now = time.time()
        if path in ("/track", "/import", "/engage", "/groups"):
            records = [{"event": "A Bought", "properties": {"token": token, "distinct_id": A_USER, "time": now,
                                                            "$insert_id": i, **b.naming()}} for i in ids]
            if path == "/engage":
                records = [{"$token": token, "$distinct_id": A_USER, "$time": now, "$set": b.naming()}]
            if path == "/groups":
                records = [{"$token": token, "$group_key": "company", "$group_id": b.id, "$set": b.naming()}]
            return ("data=" + quote(orjson.dumps(records).decode())).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        if path == "/2/httpapi":
            events = [{"event_type": "A Bought", "user_id": A_USER, "insert_id": i, "time": int(now * 1000),
                       "event_properties": b.naming()} for i in ids]
            return orjson.dumps({"api_key": token, "events": events}), {}
        events = [{"event": "A Bought", "distinct_id": A_USER, "uuid": i, "properties": b.naming(),
                   "timestamp": "2026-06-01T10:00:00Z"} for i in ids]
        if path == "/i/v1/analytics/events":
            return orjson.dumps({"batch": events}), bearer(token)
        return orjson.dumps({"api_key": token, "batch": events}), {}

    def case(client, db, b: ProjectB, a: str) -> None:
        token = auth_headers(a)["Authorization"].split(" ", 1)[1]
        ids = b.message_ids[:2]
        body, headers = body_for(token, ids, b)
        response = client.post(path, content=body, headers={"Content-Type": "application/json", **headers})
        assert 200 <= response.status_code < 300, response.text
        assert [i for i in b.identifiers() - set(ids) if i in response.text] == []
        mine = db.execute("SELECT count(*) FROM events WHERE project_id = %s", [a]).fetchone()[0]
        assert mine == (1 if path in ("/engage", "/groups") else len(ids))
        if path != "/i/v1/analytics/events":  # v1 carries no key in the body
            # B's own key in the body beside A's Authorization is refused.
            body, _ = body_for(b.token, ids, b)
            refused = client.post(path, content=body, headers={"Content-Type": "application/json", **auth_headers(a)})
            assert refused.status_code == 401, refused.text

    return case


def sdk_telemetry_case(path: str) -> Callable:
    """The SDKs' own telemetry: dropped, whoever sends it, with nothing stored or named."""

    def case(client, db, b: ProjectB, a: str) -> None:
        body = orjson.dumps({"series": [{"type": "Counter", "metric": "x", "value": 1, "tags": b.naming()}]})
        for headers in ({}, auth_headers(a), b.auth):
            response = post_raw(client, path, body, headers)
            assert response.status_code == 204 and response.content == b"", response.text
        assert stored(db, a)["events"] == []

    return case


def segment_settings_case(client, db, b: ProjectB, a: str) -> None:
    """Settings for A's key name A's key only; B's project is not named whatever A sends."""
    token = auth_headers(a)["Authorization"].split(" ", 1)[1]
    response = client.get(f"/v1/projects/{token}/settings", params=b.naming())
    assert response.status_code == 200, response.text
    assert response.json()["integrations"]["Segment.io"]["apiKey"] == token
    assert [i for i in b.identifiers() if i in response.text] == []
    # A revoked key of B's is refused like any invalid key.
    revoked = client.get(f"/v1/projects/{token_with_jti(b.id, b.revoked_jti)}/settings")
    assert revoked.status_code == 401, revoked.text


def rudderstack_config_case(client, db, b: ProjectB, a: str) -> None:
    for headers, params in ((auth_headers(a), b.naming(key=False)), ({}, {"writeKey": auth_headers(a)["Authorization"][7:]})):
        response = client.get("/sourceConfig/", params=params, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["source"]["id"] == a
        assert [i for i in b.identifiers() if i in response.text] == []


def project_settings_case(method: str) -> Callable:
    def case(client, db, b: ProjectB, a: str) -> None:
        auth = auth_headers(a)
        if method == "PATCH":
            # Fields that might name a project are unknown fields: 422, nothing stored.
            refused = client.patch("/v1/project", json={"retention_days": 30, **b.naming()}, headers=auth)
            assert refused.status_code == 422, refused.text
            changed = client.patch("/v1/project", json={"retention_days": 36500}, headers=auth)
            assert changed.status_code == 200, changed.text
        response = client.get("/v1/project", params=b.naming(), headers=auth)
        assert response.status_code == 200 and response.json()["project"] == a, response.text
        assert [i for i in b.identifiers() if i in response.text] == []

    return case


def request_erasure_case(client, db, b: ProjectB, a: str) -> None:
    """A erasing B's ids (B's Idempotency-Key, B's naming fields rejected) removes nothing of B's."""
    auth = auth_headers(a)
    refused = client.post("/v1/erasures", json={"users": b.users, **b.naming()}, headers=auth)
    assert refused.status_code == 422, refused.text
    response = client.post("/v1/erasures", json={"users": b.users + b.suppressed},
                           headers={**auth, "Idempotency-Key": b.key("/v1/erasures", 0)})
    assert response.status_code == 202 and "idempotent-replayed" not in response.headers, response.text
    job = response.json()["id"]
    deadline = time.monotonic() + 10
    while (state := client.get(f"/v1/erasures/{job}", headers=auth).json())["status"] != "done":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["events_erased"] == 0


def list_erasures_case(path: str) -> Callable:
    def case(client, db, b: ProjectB, a: str) -> None:
        auth = auth_headers(a)
        response = client.get(path, params=b.naming(), headers=auth)
        assert response.status_code == 200, response.text
        assert [i for i in b.identifiers() if i in response.text] == []
        params, cursor = b.cursors[path]
        assert_invalid_cursor(client.get(path, params={**params, "cursor": cursor}, headers=auth))

    return case


def read_erasure_case(client, db, b: ProjectB, a: str) -> None:
    for job in b.erasures:
        response = client.get(f"/v1/erasures/{job}", headers=auth_headers(a))
        assert response.status_code == 404, response.text
        same = client.get(f"/v1/erasures/{job}", headers=stranger())
        assert without_request_id(response) == without_request_id(same)


def lift_suppression_case(client, db, b: ProjectB, a: str) -> None:
    for user in b.suppressed:
        response = client.delete("/v1/suppressions/" + quote(user, safe=""), headers=auth_headers(a))
        assert response.status_code == 404, response.text
        same = client.delete("/v1/suppressions/" + quote(user, safe=""), headers=stranger())
        assert without_request_id(response) == without_request_id(same)


PROJECT_FREE = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect")

CASES: dict[tuple[str, str], Callable] = {
    **{("POST", path): ingest_case(path) for path in INGEST_PATHS},
    ("GET", "/v1/events"): list_events_case,
    ("GET", "/v1/aggregates"): aggregates_case,
    ("GET", "/v1/events/{message_id:path}"): event_by_id_case,
    ("POST", "/v1/tokens/revoked"): revoke_case,
    ("POST", "/v1/schemas"): create_schema_case,
    ("GET", "/v1/schemas"): list_schemas_case,
    ("GET", "/v1/schemas/{event:path}"): read_schema_case,
    ("PUT", "/v1/schemas/{event:path}"): change_schema_case("PUT"),
    ("DELETE", "/v1/schemas/{event:path}"): change_schema_case("DELETE"),
    **{("POST", path): vendor_case(path) for path in (
        "/batch", "/batch/", "/e/", "/e", "/capture/", "/capture", "/i/v0/e/", "/i/v0/e", "/i/v1/analytics/events",
        "/track", "/import", "/engage", "/groups", "/2/httpapi")},
    ("POST", "/v1/m"): sdk_telemetry_case("/v1/m"),
    ("POST", "/rsaMetrics"): sdk_telemetry_case("/rsaMetrics"),
    ("GET", "/v1/projects/{write_key}/settings"): segment_settings_case,
    ("GET", "/sourceConfig/"): rudderstack_config_case,
    ("GET", "/v1/project"): project_settings_case("GET"),
    ("PATCH", "/v1/project"): project_settings_case("PATCH"),
    ("POST", "/v1/erasures"): request_erasure_case,
    ("GET", "/v1/erasures"): list_erasures_case("/v1/erasures"),
    ("GET", "/v1/erasures/{erasure_id}"): read_erasure_case,
    ("GET", "/v1/suppressions"): list_erasures_case("/v1/suppressions"),
    ("DELETE", "/v1/suppressions/{user_id:path}"): lift_suppression_case,
    ("HEAD", "/sourceConfig/"): rudderstack_config_case,
    # Starlette mounts HEAD beside GET for the documentation routes: each method gets the check.
    **{route: project_free_case(*route) for route in ROUTES if route[1] in PROJECT_FREE},
}


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_a_token_of_project_a_neither_reads_writes_nor_learns_of_project_b(client, db, b, project, route):
    case = CASES.get(route)
    if case is None:
        pytest.fail(f"{route} has no tenancy case: add one to CASES in tests/test_tenancy.py")
    case(client, db, b, project)
    assert stored(db, b.id) == b.stored


def test_every_tenancy_case_is_a_route_of_the_app(client):
    # The collection-time app and the served one mount the same routes, and no case is stale.
    assert mounted_routes(client.app.routes) == set(ROUTES)
    assert set(CASES) - set(ROUTES) == set()
