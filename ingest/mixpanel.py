"""Mixpanel's wire format: `/track`, `/import`, `/engage`, `/groups`, a form whose `data` field is
one JSON object or an array (base64 too, as old SDKs send it).

The mapping (docs/ingest.md, "Other vendors"): a track or import record is a track event
(`$insert_id` the messageId, `distinct_id` the userId, `time` in seconds, or milliseconds
past 10^11, the timestamp; `$create_alias` an alias, `$identify` an identify); an `/engage`
record is an identify (`$set` and `$set_once` its traits, the other operations kept in its
properties); a `/groups` record is a group of the pseudo-person `$group:<key>:<id>`. Records
without `$insert_id` get an id derived from their content. The key is `properties.token`
(`$token` on /engage and /groups), or the Basic user of /import; it is never stored.

Its SDK reads the body's `status` and nothing else: 1 is success, 0 raises with `error`. So
every answer is that JSON, failures too, under the HTTP status Tally would give (5xx are
retried over https). With `strict=1` (Mixpanel's /import option) rejected records come back
as `failed_records`, with 400.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from ingest.envelope import Envelope, Outcome
from ingest.vendor import derived_id, epoch_time, pop, with_wire
from shared import jsonb
from shared.errors import AppError, BadRequest, PayloadTooLarge

NAME = "mixpanel"
# `time` past this is milliseconds (/import takes both); 10^11 seconds is the year 5138.
MILLISECONDS_FROM = 10**11
PROFILE_OPERATIONS = ("$set_once", "$set")


def parse(body: bytes, media_type: str | None) -> dict[str, Any]:
    """{"records": [...], "strict": bool, "api_key": str | None} from the form (or a JSON body)."""
    text = body.decode("utf-8", errors="replace")
    if body.lstrip()[:1] in (b"{", b"["):
        fields = {"data": [text]}
    else:
        fields = parse_qs(text, keep_blank_values=True)
    data = (fields.get("data") or [None])[0]
    if data is None:
        raise BadRequest('the form has no "data" field: send data=<JSON event or array of events>')
    raw = data.encode()
    if raw.lstrip()[:1] not in (b"{", b"["):
        try:
            raw = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            raise BadRequest('"data" is neither JSON nor base64 JSON') from None
    records = jsonb.decode(raw)
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise BadRequest('"data" must be a JSON object or an array of them')
    return {
        "records": records,
        "strict": (fields.get("strict") or ["0"])[0] == "1",
        "api_key": (fields.get("api_key") or [None])[0],
    }


def credential(payload: dict[str, Any]) -> object:
    for record in payload["records"]:
        if isinstance(record, dict):
            properties = record.get("properties")
            token = record.get("$token")
            if token is None and isinstance(properties, dict):
                token = properties.get("token")
            if token is not None:
                return token
    return None


def envelope(payload: dict[str, Any], kind: str | None, max_batch_events: int) -> Envelope:
    records = payload["records"]
    if not records:
        raise BadRequest("data holds no records")
    if len(records) > max_batch_events:
        raise PayloadTooLarge(f"data holds {len(records)} records; the limit is {max_batch_events}")
    to_event = {"engage": _profile, "groups": _group}.get(kind or "", _event)
    ids = [_insert_id(record) for record in records]
    return Records([to_event(record) for record in records], None, None, None, ids, strict=payload["strict"])


@dataclass(frozen=True, slots=True)
class Records(Envelope):
    # Mixpanel's strict mode: rejected records are listed in the answer (failed_records).
    strict: bool = False


def _insert_id(record: Any) -> Any:
    properties = record.get("properties") if isinstance(record, dict) else None
    return properties.get("$insert_id") if isinstance(properties, dict) else None


def _time(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= MILLISECONDS_FROM:
        return epoch_time(value, 1000)
    return epoch_time(value, 1)


def _event(record: Any) -> Any:
    """A /track or /import record: {"event", "properties": {"token", "distinct_id", "time", ...}}."""
    if not isinstance(record, dict) or not isinstance(record.get("properties"), dict):
        return record if not isinstance(record, dict) else {**record, "properties": record.get("properties")}
    properties = dict(record["properties"])
    pop(properties, "token")
    name = record.get("event")
    insert_id = properties.pop("$insert_id", None)
    event: dict[str, Any] = {k: v for k, v in record.items() if k not in ("event", "properties")}
    event.update({
        "messageId": insert_id if insert_id is not None else derived_id(NAME, record),
        "userId": properties.pop("distinct_id", None),
        "anonymousId": properties.pop("$device_id", None),
        "timestamp": _time(properties.pop("time", None)),
        "context": with_wire(_library(properties), NAME),
    })
    if name == "$create_alias":
        event.update(type="alias", previousId=event["userId"], userId=properties.pop("alias", None))
    elif name == "$identify":
        event.update(type="identify", anonymousId=properties.pop("$anon_id", event["anonymousId"]))
        event["userId"] = properties.pop("$identified_id", event["userId"])
    else:
        event.update(type="track", event=name)
    event["properties"] = properties or None
    return event


def _library(properties: dict) -> dict | None:
    name, version = properties.get("mp_lib"), properties.get("$lib_version")
    library = {k: v for k, v in (("name", name), ("version", version)) if v is not None}
    return {"library": library} if library else None


def _profile(record: Any) -> Any:
    """An /engage record: {"$token", "$distinct_id", "$time", "$set": {...}, ...}: an identify."""
    if not isinstance(record, dict):
        return record
    rest, traits = _operations(record)
    return {
        "type": "identify",
        "messageId": derived_id(NAME, record),
        "userId": rest.pop("$distinct_id", None),
        "timestamp": _time(rest.pop("$time", None)),
        "traits": traits or None,
        # The other profile operations ($add, $unset, $union...), kept as sent.
        "properties": rest or None,
        "context": {"wire": NAME},
    }


def _operations(record: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """A profile record without its token, and the traits its `$set_once` and `$set` give
    (`$set` wins); other operations stay in the record."""
    rest = dict(record)
    pop(rest, "$token")
    traits: dict[str, Any] = {}
    for operation in PROFILE_OPERATIONS:
        value = rest.pop(operation, None)
        if isinstance(value, dict):
            traits.update(value)
        elif value is not None:
            rest[operation] = value
    return rest, traits


def _group(record: Any) -> Any:
    """A /groups record: {"$token", "$group_key", "$group_id", "$set": {...}}: a group event of
    the pseudo-person `$group:<key>:<id>` (a group profile has no person of its own)."""
    if not isinstance(record, dict):
        return record
    rest, traits = _operations(record)
    key, group_id = rest.pop("$group_key", None), rest.pop("$group_id", None)
    return {
        "type": "group",
        "messageId": derived_id(NAME, record),
        "anonymousId": f"$group:{key}:{group_id}",
        "groupId": group_id,
        "timestamp": _time(rest.pop("$time", None)),
        "traits": traits or None,
        "properties": {"$group_key": key, **rest},
        "context": {"wire": NAME},
    }


def answer(outcome: Outcome, envelope: Envelope) -> tuple[int, bytes]:
    strict = isinstance(envelope, Records) and envelope.strict
    if not outcome.errors:
        if strict:
            return 200, orjson.dumps({"code": 200, "num_records_imported": len(envelope.events), "status": 1})
        return 200, orjson.dumps({"status": 1, "error": None})
    if strict:
        ids = envelope.ids or []
        failed = [{
            "index": e["index"], "$insert_id": ids[e["index"]] if e["index"] < len(ids) else None,
            "field": e["code"], "message": e["detail"],
        } for e in outcome.errors]
        return 400, orjson.dumps({
            "code": 400, "error": "some data points in the request failed validation",
            "num_records_imported": len(envelope.events) - len(failed), "status": "Bad Request",
            "failed_records": failed,
        })
    summary = f"{len(outcome.errors)} of {len(envelope.events)} records were rejected: " + "; ".join(
        f"{e['index']}: {e['code']} ({e['detail']})" for e in outcome.errors[:5]
    )
    return 200, orjson.dumps({"status": 0, "error": summary})


def problem(error: AppError) -> tuple[int, bytes] | None:
    return error.status, orjson.dumps({"status": 0, "error": error.detail})
