"""PostHog's wire format: `/batch/` and the single-event paths (v0), `/i/v1/analytics/events` (v1).

Each PostHog event becomes one Segment-shaped event (the mapping table is in docs/ingest.md,
"Other vendors"): `uuid` is the messageId, `distinct_id` the userId, `$set`/`$identify` an
identify, `$groupidentify` a group, `$create_alias` an alias, `$pageview` a page, `$screen` a
screen, any other name a track. The key is the body's `api_key` (or `token`, or an event's
`properties.token`) in v0, `Authorization: Bearer` in v1; it is never stored.

v0 answers 200 `{"status": 1}` (its SDK reads the status only); v1 answers a result per uuid,
`ok` for stored and duplicate events and `drop` for rejected ones, which its SDK does not resend.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingest.envelope import Envelope, Outcome, check_batch_size
from ingest.segment import sent_at_of
from ingest.vendor import derived_id, pop, with_wire
from shared import jsonb
from shared.errors import AppError, BadRequest

NAME = "posthog"
# PostHog's special events and the Segment type each becomes; any other name is a track.
TYPES = {
    "$set": "identify", "$set_once": "identify", "$identify": "identify", "$groupidentify": "group",
    "$create_alias": "alias", "$pageview": "page", "$screen": "screen",
}
# The keys of a PostHog event this mapping reads; every other key is kept (in `extra`).
READ = {"event", "distinct_id", "properties", "timestamp", "uuid", "$set", "$set_once", "api_key", "token", "type"}


def parse(body: bytes, media_type: str | None) -> Any:
    payload = jsonb.decode(body)
    if not isinstance(payload, (dict, list)):
        raise BadRequest("body must be a JSON object or an array of events")
    return payload


def _raw_events(payload: Any) -> list[Any]:
    if isinstance(payload, list):
        return payload
    if "batch" in payload:
        if not isinstance(payload["batch"], list):
            raise BadRequest('"batch" must be a list of events')
        return payload["batch"]
    return [payload]  # one event, as /e/ and /capture/ take it


def credential(payload: Any) -> object:
    if isinstance(payload, dict):
        for key in ("api_key", "token"):
            if payload.get(key) is not None:
                return payload[key]
    for raw in _raw_events(payload):
        if isinstance(raw, dict):
            properties = raw.get("properties")
            for found in (raw.get("api_key"), raw.get("token"), properties.get("token") if isinstance(properties, dict) else None):
                if found is not None:
                    return found
    return None


def envelope(payload: Any, kind: str | None, max_batch_events: int) -> Envelope:
    raws = _raw_events(payload)
    check_batch_size(raws, max_batch_events)
    sent_at = payload.get("sent_at") if isinstance(payload, dict) else None
    events = [_event(raw) for raw in raws]
    ids = [raw.get("uuid") if isinstance(raw, dict) else None for raw in raws]
    return Envelope(events, sent_at_of(sent_at), None, None, ids)


def _event(raw: Any) -> Any:
    """One PostHog event as a Segment-shaped one."""
    if not isinstance(raw, dict):
        return raw  # rejected by the checks: invalid_event
    name = raw.get("event")
    properties = raw.get("properties")
    properties = dict(properties) if isinstance(properties, dict) else properties
    kind = TYPES.get(name, "track") if isinstance(name, str) else "track"
    event: dict[str, Any] = {k: v for k, v in raw.items() if k not in READ}
    event.update({
        "type": kind,
        "messageId": raw.get("uuid") if raw.get("uuid") is not None else derived_id(NAME, raw),
        "userId": raw.get("distinct_id"),
        "timestamp": raw.get("timestamp"),
    })
    context: dict[str, Any] = {}
    if isinstance(properties, dict):
        pop(properties, "token", "api_key")
        if properties.get("distinct_id") == raw.get("distinct_id"):
            properties.pop("distinct_id", None)
        library = {k: v for k, v in (("name", properties.get("$lib")), ("version", properties.get("$lib_version"))) if v is not None}
        if library:
            context["library"] = library
        if kind == "identify":
            traits = {**_object(properties.pop("$set_once", None)), **_object(raw.get("$set_once")),
                      **_object(properties.pop("$set", None)), **_object(raw.get("$set"))}
            event["traits"] = traits or None
            if properties.get("$anon_distinct_id") is not None:
                event["anonymousId"] = properties["$anon_distinct_id"]
        elif kind == "group":
            event["groupId"] = properties.pop("$group_key", None)
            event["traits"] = properties.pop("$group_set", None)
        elif kind == "alias":
            # alias(previous_id, distinct_id): the event's distinct_id is the previous id.
            event["userId"] = properties.pop("alias", None)
            event["previousId"] = raw.get("distinct_id")
            properties.pop("distinct_id", None)
        elif kind == "screen":
            event["name"] = properties.get("$screen_name")
        elif kind == "track":
            event["event"] = name
    elif kind == "track":
        event["event"] = name
    if kind == "identify" and not isinstance(properties, dict):
        event["traits"] = {**_object(raw.get("$set_once")), **_object(raw.get("$set"))} or None
    event["properties"] = properties or None
    event["context"] = with_wire(context or None, NAME)
    return event


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def answer(outcome: Outcome, envelope: Envelope) -> tuple[int, bytes]:
    return 200, orjson.dumps({"status": 1})


def problem(error: AppError) -> tuple[int, bytes] | None:
    return None  # its SDK reads the HTTP status only: 5xx, 408 and 429 are retried


class V1:
    """PostHog's v1 capture endpoint: the same mapping, Bearer auth, a result per uuid."""

    NAME = NAME
    parse = staticmethod(parse)
    envelope = staticmethod(envelope)
    problem = staticmethod(problem)

    @staticmethod
    def credential(payload: Any) -> object:
        return None  # Authorization: Bearer only

    @staticmethod
    def answer(outcome: Outcome, envelope: Envelope) -> tuple[int, bytes]:
        rejected = {error["index"]: error for error in outcome.errors}
        results = {}
        for index, event in enumerate(envelope.events):
            uuid = (envelope.ids or [])[index] if envelope.ids else None
            key = uuid if uuid is not None else (event.get("messageId") if isinstance(event, dict) else str(index))
            error = rejected.get(index)
            results[str(key)] = {"result": "ok"} if error is None else {
                "result": "drop", "code": error["code"], "detail": error["detail"],
            }
        return 200, orjson.dumps({"results": results})
