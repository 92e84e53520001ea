"""Idempotency-Key (IETF httpapi draft), scoped to the project: replay, mismatch, in flight, retention."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared import idempotency
from ingest.service import purge_expired_keys
from shared.db import create_pool
from tests.factories import auth_headers, make_batch
from tests.helpers import make_settings


def event_count(db, project: str) -> int:
    return db.execute("SELECT count(*) FROM events WHERE project_id = %s", [project]).fetchone()[0]


def key_created_at(db, project: str, key: str):
    row = db.execute("SELECT created_at FROM idempotency_keys WHERE project_id = %s AND key = %s", [project, key])
    return row.fetchone()


def test_retry_with_same_key_and_body_replays_the_first_response(client, auth, db, project):
    batch = make_batch(3)
    first = client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": "k-1"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    assert first.json()["accepted"] == 3
    retry = client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": "k-1"})
    assert retry.status_code == first.status_code
    assert retry.content == first.content  # "accepted": 3 again, not "duplicates": 3
    assert retry.headers["idempotent-replayed"] == "true"
    assert event_count(db, project) == 3


def test_quoted_sf_string_key_is_the_same_key_as_the_bare_token(client, auth, db, project):
    batch = make_batch(1)
    client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": '"order-7"'})
    retry = client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": "order-7"})
    assert retry.headers["idempotent-replayed"] == "true"


def test_same_key_with_another_body_is_422_and_stores_nothing(client, auth, db, project):
    client.post("/v1/batch", json=make_batch(2), headers={**auth, "Idempotency-Key": "k-2"})
    other = client.post("/v1/batch", json=make_batch(2), headers={**auth, "Idempotency-Key": "k-2"})
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["code"] == "idempotency_key_mismatch"
    assert event_count(db, project) == 2


def test_same_key_and_body_on_another_endpoint_is_422(client, auth, db, project):
    event = make_batch(1)["batch"][0]
    client.post("/v1/track", json=event, headers={**auth, "Idempotency-Key": "k-3"})
    other = client.post("/v1/identify", json={**event, "type": "identify"}, headers={**auth, "Idempotency-Key": "k-3"})
    assert other.json()["code"] == "idempotency_key_mismatch"


def test_same_key_in_another_project_is_independent(client, db, project):
    other_project = "p_" + uuid.uuid4().hex[:12]
    for p in (project, other_project):
        response = client.post("/v1/batch", json=make_batch(2), headers={**auth_headers(p), "Idempotency-Key": "shared"})
        assert response.status_code == 200 and "idempotent-replayed" not in response.headers
        assert event_count(db, p) == 2


def test_retry_while_the_first_is_in_flight_is_409_then_succeeds(client, auth, db, project):
    batch = make_batch(2)
    with db.transaction():
        # The lock the service takes while it stores the first request with this key.
        lock = idempotency.TRY_LOCK_IDEMPOTENCY_KEY.replace("pg_try_advisory_xact_lock", "pg_advisory_xact_lock")
        db.execute(lock, {"project": project, "key": "k-4"})
        busy = client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": "k-4"})
        assert busy.status_code == 409
        assert busy.json()["code"] == "idempotency_key_in_use"
        assert busy.headers["retry-after"]
        assert event_count(db, project) == 0
    done = client.post("/v1/batch", json=batch, headers={**auth, "Idempotency-Key": "k-4"})
    assert done.status_code == 200 and done.json()["accepted"] == 2
    assert "idempotent-replayed" not in done.headers


@pytest.mark.parametrize(
    "values",
    [["k" * 256], ["a", "b"], ["ключ"], ['"unterminated\\"'], ['""']],
    ids=["too-long", "two-headers", "non-ascii", "bad-escape", "empty"],
)
def test_malformed_key_is_400_and_stores_nothing(client, auth, db, project, values):
    headers = [(k, v) for k, v in auth.items()] + [("Idempotency-Key", v) for v in values]
    response = client.post("/v1/batch", json=make_batch(1), headers=[(k, v.encode()) for k, v in headers])
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert event_count(db, project) == 0


def test_key_of_255_characters_is_accepted(client, auth, project):
    response = client.post("/v1/batch", json=make_batch(1), headers={**auth, "Idempotency-Key": "k" * 255})
    assert response.status_code == 200


def backdate(db, project: str, key: str, seconds: int) -> None:
    db.execute(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => %s) WHERE project_id = %s AND key = %s",
        [seconds, project, key],
    )


def test_key_older_than_the_retention_is_not_replayed(client, auth, db, project, settings):
    client.post("/v1/batch", json=make_batch(1), headers={**auth, "Idempotency-Key": "old"})
    backdate(db, project, "old", settings.idempotency_ttl_seconds + 60)
    reused = client.post("/v1/batch", json=make_batch(1), headers={**auth, "Idempotency-Key": "old"})
    assert reused.status_code == 200 and "idempotent-replayed" not in reused.headers
    assert event_count(db, project) == 2


def test_purge_deletes_keys_past_the_retention_and_keeps_the_rest(client, auth, db, project, database_url):
    ttl = 3600
    for key in ("expired", "fresh"):
        client.post("/v1/batch", json=make_batch(1), headers={**auth, "Idempotency-Key": key})
    backdate(db, project, "expired", ttl + 1)
    backdate(db, project, "fresh", ttl - 60)

    async def purge() -> int:
        pool = create_pool(make_settings(database_url))
        await pool.open()
        try:
            return await purge_expired_keys(pool, ttl)
        finally:
            await pool.close()

    assert asyncio.run(purge()) >= 1
    assert key_created_at(db, project, "expired") is None
    assert key_created_at(db, project, "fresh") is not None
