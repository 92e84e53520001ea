"""GET /v1/events and /v1/events/{messageId} over HTTP against real Postgres."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

from tests.factories import auth_headers, make_event

UTC = timezone.utc


def ingest(client, auth, events: list[dict], **body) -> None:
    response = client.post("/v1/batch", json={"batch": events, **body}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 0, response.text


def page(client, auth, **params) -> dict:
    response = client.get("/v1/events", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def walk_ids(client, auth, between_pages=None, **params) -> list[str]:
    ids, cursor = [], None
    while True:
        body = page(client, auth, **params, **({"cursor": cursor} if cursor else {}))
        ids += [e["messageId"] for e in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
        if between_pages:
            between_pages()


def test_event_item_carries_every_stored_field(client, auth):
    sent = datetime.now(UTC).replace(microsecond=0)
    happened = sent - timedelta(minutes=1, microseconds=-250_000)
    event = make_event(
        anonymousId="anon-1", timestamp=happened.isoformat(), traits={"email": "a@b.c"},
        integrations={"All": False}, channel="server",
    )
    ingest(client, auth, [event], sentAt=sent.isoformat())
    item = page(client, auth)["data"][0]
    received = item.pop("receivedAt")
    assert datetime.fromisoformat(received).tzinfo is not None
    assert item == {
        "messageId": event["messageId"],
        "type": "track",
        "event": "Order Completed",
        "userId": "user-1",
        "anonymousId": "anon-1",
        "timestamp": happened.isoformat().replace("+00:00", "Z"),
        "originalTimestamp": happened.isoformat().replace("+00:00", "Z"),
        "sentAt": sent.isoformat().replace("+00:00", "Z"),
        "properties": event["properties"],
        "context": event["context"],
        "traits": {"email": "a@b.c"},
        "extra": {"integrations": {"All": False}, "channel": "server"},
        "violations": None,
    }
    single = client.get(f"/v1/events/{event['messageId']}", headers=auth)
    assert single.status_code == 200
    assert single.json() == {**item, "receivedAt": received}


def test_events_are_newest_first_and_filters_combine(client, auth):
    base = datetime(2026, 3, 2, tzinfo=UTC)
    events = [
        make_event(event="A", userId="u1", timestamp=(base + timedelta(minutes=1)).isoformat()),
        make_event(event="B", userId="u2", anonymousId="anon-2", timestamp=(base + timedelta(minutes=2)).isoformat()),
        make_event(event="A", userId=None, anonymousId="anon-2", timestamp=(base + timedelta(minutes=3)).isoformat()),
        make_event(type="identify", event=None, userId="u1", timestamp=(base + timedelta(minutes=4)).isoformat()),
    ]
    ingest(client, auth, events)
    ids = [e["messageId"] for e in events]

    def found(**params):
        return [e["messageId"] for e in page(client, auth, **params)["data"]]

    assert found() == ids[::-1]
    assert found(event="A") == [ids[2], ids[0]]
    assert found(event=["A", "B"]) == [ids[2], ids[1], ids[0]]
    assert found(user="u1") == [ids[3], ids[0]]
    assert found(user="anon-2") == [ids[2], ids[1]]  # matches anonymousId too
    assert found(type="identify") == [ids[3]]
    assert found(**{"from": (base + timedelta(minutes=2)).isoformat(), "to": (base + timedelta(minutes=4)).isoformat()}) == [ids[2], ids[1]]
    assert found(event="A", user="anon-2") == [ids[2]]


def test_unknown_or_foreign_message_id_is_404_problem(client, auth):
    event = make_event()
    ingest(client, auth, [event])
    other = auth_headers("p_" + uuid.uuid4().hex[:12])
    for headers, message_id in ((auth, "no-such-id"), (other, event["messageId"])):
        response = client.get(f"/v1/events/{message_id}", headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"


def test_message_id_with_a_slash_is_found(client, auth):
    event = make_event(messageId="batch/7/event 1")
    ingest(client, auth, [event])
    response = client.get("/v1/events/batch%2F7%2Fevent%201", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["messageId"] == "batch/7/event 1"


def test_listing_never_shows_another_projects_events(client, auth):
    ingest(client, auth, [make_event(userId="shared-user")])
    other = auth_headers("p_" + uuid.uuid4().hex[:12])
    assert page(client, other)["data"] == []
    assert page(client, other, user="shared-user")["data"] == []
    assert page(client, other, event="Order Completed")["data"] == []


def test_walk_returns_each_event_once_while_new_events_keep_arriving(client, auth):
    rng = random.Random(7)
    base = datetime(2026, 3, 3, tzinfo=UTC)
    # Ties on timestamp: many events share each second, ordered by messageId within it.
    existing = [make_event(timestamp=(base + timedelta(seconds=rng.randrange(60))).isoformat()) for _ in range(250)]
    ingest(client, auth, existing)
    arrived: list[str] = []

    def more():
        # New events before, inside and after the walked range, including exact timestamp ties.
        fresh = [make_event(timestamp=(base + timedelta(seconds=rng.randrange(-30, 90))).isoformat()) for _ in range(7)]
        ingest(client, auth, fresh)
        arrived.extend(e["messageId"] for e in fresh)

    ids = walk_ids(client, auth, between_pages=more, limit=23)
    assert len(ids) == len(set(ids))
    assert {e["messageId"] for e in existing} <= set(ids)
    assert set(ids) <= {e["messageId"] for e in existing} | set(arrived)


def test_listing_metrics_are_exported(client, auth):
    page(client, auth)
    text = client.get("/metrics").text
    assert 'tally_query_duration_seconds_count{endpoint="events"}' in text
    assert 'tally_query_rows_returned_count{endpoint="events"}' in text
