"""Amplitude's wire format: `/2/httpapi` and `/batch`, `{"api_key", "events": [...], "options"?}`.

The mapping (docs/ingest.md, "Other vendors"): `insert_id` is the messageId (derived from the
content when absent), `user_id` the userId, `device_id` the anonymousId, `time` (milliseconds)
the timestamp, `event_type` the name; `$identify` is an identify whose traits are the
`user_properties` `$set` and `$setOnce` (other operations kept in its properties),
`$groupidentify` a group; `event_properties` are the properties and `user_properties` of any
other event its traits. The key is the body's `api_key`; it is never stored.

Its SDK reads `code` from the body: 200 with `events_ingested` is success. Rejected events come
back as a 400 naming their indices by field (`events_with_invalid_fields`,
`events_with_missing_fields`): the SDK drops those and sends the others again, which were
stored already and come back as duplicates. Failures keep Tally's status with `{"code", "error"}`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ingest.envelope import Envelope, Outcome, parse_object
from ingest.vendor import derived_id, epoch_time, with_wire
from shared.errors import AppError, BadRequest, PayloadTooLarge, Rejection

NAME = "amplitude"
# The keys of an Amplitude event this mapping reads; every other key is kept (in `extra`).
READ = {"event_type", "user_id", "device_id", "time", "insert_id", "event_properties", "user_properties", "library"}
IDENTIFY_OPERATIONS = ("$setOnce", "$set")
# Which Amplitude field a rejection is about, for the indices-by-field answer its SDK reads.
FIELDS = {
    Rejection.MISSING_IDENTITY: ("missing", "user_id"),
    Rejection.MISSING_EVENT_NAME: ("missing", "event_type"),
    Rejection.INVALID_EVENT_NAME: ("invalid", "event_type"),
    Rejection.INVALID_MESSAGE_ID: ("invalid", "insert_id"),
    Rejection.INVALID_USER_ID: ("invalid", "user_id"),
    Rejection.INVALID_ANONYMOUS_ID: ("invalid", "device_id"),
    Rejection.INVALID_TIMESTAMP: ("invalid", "time"),
    Rejection.TIMESTAMP_IN_FUTURE: ("invalid", "time"),
    Rejection.TIMESTAMP_OUT_OF_RANGE: ("invalid", "time"),
    Rejection.INVALID_PROPERTIES: ("invalid", "event_properties"),
    Rejection.SCHEMA_VIOLATION: ("invalid", "event_properties"),
    Rejection.INVALID_TRAITS: ("invalid", "user_properties"),
}


def parse(body: bytes, media_type: str | None) -> dict[str, Any]:
    return sized(parse_object(body), len(body))


def sized(payload: dict[str, Any], size: int) -> dict[str, Any]:
    """The decoded body with its size, which the success answer reports."""
    return {**payload, "_size": size}


def credential(payload: dict[str, Any]) -> object:
    return payload.get("api_key")


def envelope(payload: dict[str, Any], kind: str | None, max_batch_events: int) -> Envelope:
    raws = payload.get("events")
    if not isinstance(raws, list) or not raws:
        raise BadRequest('body must be an object with a non-empty "events" list')
    if len(raws) > max_batch_events:
        raise PayloadTooLarge(f"{len(raws)} events; the limit is {max_batch_events}")
    return Sized([_event(raw) for raw in raws], None, None, None, [r.get("insert_id") if isinstance(r, dict) else None
                                                                    for r in raws], size=payload["_size"])


def _event(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return raw  # rejected by the checks: invalid_event
    name = raw.get("event_type")
    user_properties = raw.get("user_properties")
    event: dict[str, Any] = {k: v for k, v in raw.items() if k not in READ}
    library = raw.get("library")
    event.update({
        "messageId": raw["insert_id"] if raw.get("insert_id") is not None else derived_id(NAME, raw),
        "userId": raw.get("user_id"),
        "anonymousId": raw.get("device_id"),
        "timestamp": epoch_time(raw.get("time"), 1000) if raw.get("time") is not None else None,
        "properties": raw.get("event_properties"),
        "context": with_wire({"library": {"name": library}} if isinstance(library, str) else None, NAME),
    })
    if name in ("$identify", "$groupidentify"):
        traits: dict[str, Any] = {}
        rest = dict(user_properties) if isinstance(user_properties, dict) else {}
        group_properties = raw.get("group_properties")
        source = group_properties if name == "$groupidentify" and isinstance(group_properties, dict) else rest
        for operation in IDENTIFY_OPERATIONS:
            value = source.pop(operation, None) if source is rest else source.get(operation)
            if isinstance(value, dict):
                traits.update(value)
        event["traits"] = traits or None
        if name == "$identify":
            event["type"] = "identify"
            event["properties"] = rest or event["properties"]
        else:
            groups = raw.get("groups") if isinstance(raw.get("groups"), dict) else {}
            event.update(type="group", groupId=next(iter(groups.values()), None))
    else:
        event.update(type="track", event=name, traits=user_properties)
    return event


@dataclass(frozen=True, slots=True)
class Sized(Envelope):
    # The request body's size, which the success answer reports (payload_size_bytes).
    size: int = 0


def answer(outcome: Outcome, envelope: Envelope) -> tuple[int, bytes]:
    size = envelope.size if isinstance(envelope, Sized) else 0
    if not outcome.errors:
        return 200, orjson.dumps({
            "code": 200, "events_ingested": len(envelope.events), "payload_size_bytes": size,
            "server_upload_time": int(time.time() * 1000),
        })
    invalid: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    for error in outcome.errors:
        kind, field = FIELDS.get(error["code"], ("invalid", "event"))
        (missing if kind == "missing" else invalid).setdefault(field, []).append(error["index"])
    body: dict[str, Any] = {
        "code": 400, "error": "Invalid field values on some events",
        "events_with_invalid_fields": invalid, "events_with_missing_fields": missing,
        # Tally's own codes and details, by index, for a person reading the answer.
        "rejections": outcome.errors,
    }
    return 400, orjson.dumps(body)


def problem(error: AppError) -> tuple[int, bytes] | None:
    return error.status, orjson.dumps({"code": error.status, "error": error.detail})
