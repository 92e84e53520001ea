"""Per-event rules: what a Segment-shaped event must look like, and the row it becomes.

Plain functions over the parsed dicts, no model object per event: validation of a 1000-event
batch costs a few hundred microseconds. Every rejection has a stable `code` and a detail a
developer can act on; a rejected event never fails its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson

from ingest.plan import Rule
from shared.errors import Rejection
from shared.events import EVENT_TYPES, MAX_EVENT_NAME, MAX_MESSAGE_ID, MAX_USER_ID
from shared.json_schema import violations as plan_violations
from shared.jsonb import NotStorable, encode as encode_json

# Fields with a column of their own; every other key of an event is kept verbatim in `extra`,
# but for the write key, which browser SDKs put in every event and which is never stored.
COLUMNS = frozenset(
    {"messageId", "type", "event", "userId", "anonymousId", "timestamp", "properties", "context", "traits"}
)
NOT_EXTRA = COLUMNS | {"writeKey"}
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Rejected(Exception):
    def __init__(self, code: Rejection, detail: str):
        self.code = code
        self.detail = detail


class SchemaViolation(Rejected):
    """A track event broke its schema in the tracking plan, in enforce mode."""

    def __init__(self, event: str, detail: str):
        super().__init__(Rejection.SCHEMA_VIOLATION, detail)
        self.event = event


@dataclass(slots=True)
class BatchContext:
    received_at: datetime
    sent_at: datetime | None
    # Correct for client clock skew only when the client's clock is this far off.
    skew_threshold: timedelta
    future_limit: datetime
    max_event_bytes: int
    batch_context: dict | None
    # The project's tracking plan: event name -> schema rule for its track calls.
    rules: dict[str, Rule]
    # The project's lifecycle: events older than this are not kept (None: kept forever), and
    # new events of these ids are refused (shared/projects.py, shared/suppressions.py).
    retained_from: datetime | None = None
    suppressed: frozenset[str] = frozenset()
    # Whether this batch's timestamps are corrected by its sentAt: decided once per batch.
    correct_skew: bool = field(init=False)

    def __post_init__(self) -> None:
        self.correct_skew = self.sent_at is not None and abs(self.received_at - self.sent_at) > self.skew_threshold


@dataclass(slots=True)
class Row:
    message_id: str
    # The row as one JSON object, keys named after the columns (sql.INSERT_EVENTS unpacks it
    # with jsonb_to_recordset): one encoder call per event, not a dump per column and an array
    # per column built in Python.
    encoded: bytes
    # The event name when the event was stored flagged (it broke a schema in flag mode).
    flagged: str | None = None


def parse_time(value: object, name: str = "timestamp") -> datetime:
    """An ISO-8601 instant with an offset, or ValueError saying what is wrong with `name`."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 string with an offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} {value[:64]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} {value[:64]!r} has no UTC offset (add Z or +hh:mm)")
    return parsed


def _timestamp(value: object, name: str) -> datetime:
    try:
        return parse_time(value, name)
    except ValueError as exc:
        raise Rejected(Rejection.INVALID_TIMESTAMP, str(exc)) from None


IDENTITY_CODES = {"userId": Rejection.INVALID_USER_ID, "anonymousId": Rejection.INVALID_ANONYMOUS_ID}
OBJECT_CODES = {
    "properties": Rejection.INVALID_PROPERTIES, "context": Rejection.INVALID_CONTEXT, "traits": Rejection.INVALID_TRAITS,
}


def _identity(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    if type(value) is str and 0 < len(value) <= MAX_USER_ID:  # the common case, first
        return value
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Rejected(IDENTITY_CODES[key], f"{key} must be a string or a number")
    text = value if isinstance(value, str) else _decimal(value)
    if len(text) > MAX_USER_ID:
        raise Rejected(IDENTITY_CODES[key], f"{key} is longer than {MAX_USER_ID} characters")
    return text


def _decimal(number: int | float) -> str:
    """A numeric id as a plain decimal string: 42 -> "42", 1e20 -> "100000000000000000000"."""
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    # repr is the shortest string that round-trips; Decimal writes it without an exponent.
    return str(number) if isinstance(number, int) else format(Decimal(repr(number)), "f")


def is_unicode(text: str) -> bool:
    """False for a str holding a lone surrogate, which the exact JSON parser lets through."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _json_object(raw: dict, key: str) -> dict | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Rejected(OBJECT_CODES[key], f"{key} must be a JSON object")
    return value


def encode(row: dict) -> bytes:
    """The row as JSON, or Rejected when Postgres could not store it exactly as sent."""
    try:
        return encode_json(row)
    except NotStorable as exc:
        raise Rejected(Rejection.UNSTORABLE_VALUE, f"the event cannot be stored exactly as sent: {exc}") from None


def to_row(raw: object, kind: str | None, ctx: BatchContext) -> Row:
    """Validate one event and shape it into a row, or raise Rejected."""
    if not isinstance(raw, dict):
        raise Rejected(Rejection.INVALID_EVENT, "each event must be a JSON object")
    message_id = raw.get("messageId")
    if message_id is None:
        raise Rejected(Rejection.MISSING_MESSAGE_ID, "messageId is required: a client-generated unique id for the event")
    if not isinstance(message_id, str) or not 1 <= len(message_id) <= MAX_MESSAGE_ID:
        raise Rejected(Rejection.INVALID_MESSAGE_ID, f"messageId must be a string of 1 to {MAX_MESSAGE_ID} characters")

    event_type = raw.get("type", kind)
    if kind is not None and event_type != kind:
        raise Rejected(Rejection.INVALID_TYPE, f"type {event_type!r} does not match the endpoint /v1/{kind}")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:  # a list or dict is unhashable
        raise Rejected(Rejection.INVALID_TYPE, "type must be one of " + ", ".join(sorted(EVENT_TYPES)))

    user_id = _identity(raw, "userId")
    anonymous_id = _identity(raw, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise Rejected(Rejection.MISSING_IDENTITY, "userId or anonymousId is required")
    if ctx.suppressed and (user_id in ctx.suppressed or anonymous_id in ctx.suppressed):
        raise Rejected(Rejection.USER_SUPPRESSED, "this user's data was erased and their new events are refused")

    if event_type == "track":
        name = raw.get("event")
        if name is None:
            raise Rejected(Rejection.MISSING_EVENT_NAME, "event (the event name) is required for track")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_EVENT_NAME:
            raise Rejected(Rejection.INVALID_EVENT_NAME, f"event must be a string of 1 to {MAX_EVENT_NAME} characters")
    else:
        # Non-track events count under "$<type>"; a client `event` key is kept in extra.
        name = "$" + event_type

    # The event time: `timestamp`, else RudderStack's `originalTimestamp` (its SDKs send no
    # `timestamp`), else the time received.
    original = raw.get("timestamp")
    from_original = original is None and raw.get("originalTimestamp") is not None
    if from_original:
        original = raw["originalTimestamp"]
    if original is None:
        ts = ctx.received_at
        original_ts = None
    else:
        original_ts = _timestamp(original, "originalTimestamp" if from_original else "timestamp")
        ts = original_ts
        if ctx.correct_skew:
            try:
                ts = ctx.received_at - (ctx.sent_at - original_ts)
            except OverflowError:  # sentAt and timestamp millennia apart: no real clock is that far off
                raise Rejected(Rejection.TIMESTAMP_OUT_OF_RANGE, "timestamp corrected by sentAt falls outside years 1-9999") from None
    if ts > ctx.future_limit:
        raise Rejected(Rejection.TIMESTAMP_IN_FUTURE, f"timestamp {ts.isoformat()} is too far in the future")
    if ts < EARLIEST:
        raise Rejected(Rejection.TIMESTAMP_OUT_OF_RANGE, "timestamp is before 1970-01-01")
    if ctx.retained_from is not None and ts < ctx.retained_from:
        raise Rejected(
            Rejection.OUTSIDE_RETENTION,
            f"timestamp {ts.isoformat()} is older than the project keeps events (from {ctx.retained_from.isoformat()})",
        )

    properties = _json_object(raw, "properties")
    rule = ctx.rules.get(name) if event_type == "track" else None
    found = plan_violations(rule.validator, properties if properties is not None else {}) if rule else None
    if found and rule.mode == "enforce":
        more = f"; and {len(found) - 1} more" if len(found) > 1 else ""
        raise SchemaViolation(name, f"properties break the tracking plan for {name!r}: {found[0].describe()}{more}")

    # Most events hold only keys with columns: the subset test (in C) skips building a dict.
    rest = None if raw.keys() <= COLUMNS else {k: v for k, v in raw.items() if k not in NOT_EXTRA}
    if from_original:
        del rest["originalTimestamp"]  # stored as the original timestamp
    if event_type != "track" and "event" in raw:
        rest = {**(rest or {}), "event": raw["event"]}
    encoded = encode({
        "message_id": message_id,
        "type": event_type,
        "event": name,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "ts": ts,
        "original_timestamp": original_ts,
        "properties": properties,
        "context": _merged_context(raw, ctx.batch_context),
        "traits": _json_object(raw, "traits"),
        "extra": rest or None,
    })
    # The size of the event as stored (its JSON row), a little above what the client sent.
    if len(encoded) > ctx.max_event_bytes:
        raise Rejected(Rejection.EVENT_TOO_LARGE, f"event is {len(encoded)} bytes as stored; the limit is {ctx.max_event_bytes}")
    if found:
        # Appended after the size check: the limit is on what the client sent, not on our notes.
        flagged = orjson.dumps([v.as_dict() for v in found])
        return Row(message_id, encoded[:-1] + b',"violations":' + flagged + b"}", flagged=name)
    return Row(message_id, encoded)


def _merged_context(raw: dict, batch_context: dict | None) -> dict | None:
    # Segment's batch-level context applies to every event; the event's own keys win.
    own = _json_object(raw, "context")
    if batch_context is None:
        return own
    return {**batch_context, **(own or {})}
