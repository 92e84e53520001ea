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
from shared.jsonb import holds_nul
from shared.tracking_plan import violations as plan_violations

EVENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
# Fields with a column of their own; every other key of an event is kept verbatim in `extra`.
COLUMNS = frozenset(
    {"messageId", "type", "event", "userId", "anonymousId", "timestamp", "properties", "context", "traits"}
)
MAX_MESSAGE_ID = 200
MAX_EVENT_NAME = 200
MAX_USER_ID = 255
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Rejected(Exception):
    def __init__(self, code: str, detail: str):
        self.code = code
        self.detail = detail


class SchemaViolation(Rejected):
    """A track event broke its schema in the tracking plan, in enforce mode."""

    def __init__(self, event: str, detail: str):
        super().__init__("schema_violation", detail)
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
    # Whether this batch's timestamps are corrected by its sentAt: decided once per batch.
    correct_skew: bool = field(init=False)

    def __post_init__(self) -> None:
        self.correct_skew = self.sent_at is not None and abs(self.received_at - self.sent_at) > self.skew_threshold


@dataclass(slots=True)
class Row:
    message_id: str
    # The row as one JSON object, keys named after the columns (sql.INSERT_EVENTS unpacks it
    # with jsonb_to_recordset): one orjson call per event instead of a dump per column plus
    # eleven Python-built arrays, which halved the CPU the server spends sending a batch.
    encoded: bytes
    # The event name when the event was stored flagged (it broke a schema in flag mode).
    flagged: str | None = None


def parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise Rejected(f"invalid_{name.lower()}", f"{name} must be an ISO-8601 string with an offset")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(f"invalid_{name.lower()}", f"{name} {value[:64]!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise Rejected(f"invalid_{name.lower()}", f"{name} {value[:64]!r} has no UTC offset (add Z or +hh:mm)")
    return parsed


IDENTITY_CODES = {"userId": "invalid_user_id", "anonymousId": "invalid_anonymous_id"}


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
        raise Rejected(f"invalid_{key}", f"{key} must be a JSON object")
    return value


def encode(row: dict) -> bytes:
    """The row as JSON, or Rejected when Postgres could not store it exactly as sent."""
    try:
        text = orjson.dumps(row)
    except TypeError as exc:  # an integer past 64 bits, a lone surrogate, or nesting past 255 levels
        raise Rejected("unstorable_value", f"the event holds a value that cannot be stored exactly: {exc}") from None
    if holds_nul(text):
        raise Rejected("unstorable_value", "the event contains a NUL character (\\u0000), which Postgres cannot store")
    return text


def to_row(raw: object, kind: str | None, ctx: BatchContext) -> Row:
    """Validate one event and shape it into a row, or raise Rejected."""
    if not isinstance(raw, dict):
        raise Rejected("invalid_event", "each event must be a JSON object")
    message_id = raw.get("messageId")
    if message_id is None:
        raise Rejected("missing_message_id", "messageId is required: a client-generated unique id for the event")
    if not isinstance(message_id, str) or not 1 <= len(message_id) <= MAX_MESSAGE_ID:
        raise Rejected("invalid_message_id", f"messageId must be a string of 1 to {MAX_MESSAGE_ID} characters")

    event_type = raw.get("type", kind)
    if kind is not None and event_type != kind:
        raise Rejected("invalid_type", f"type {event_type!r} does not match the endpoint /v1/{kind}")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:  # a list or dict is unhashable
        raise Rejected("invalid_type", "type must be one of " + ", ".join(sorted(EVENT_TYPES)))

    user_id = _identity(raw, "userId")
    anonymous_id = _identity(raw, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise Rejected("missing_identity", "userId or anonymousId is required")

    if event_type == "track":
        name = raw.get("event")
        if name is None:
            raise Rejected("missing_event_name", "event (the event name) is required for track")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_EVENT_NAME:
            raise Rejected("invalid_event_name", f"event must be a string of 1 to {MAX_EVENT_NAME} characters")
    else:
        # Non-track events count under "$<type>"; a client `event` key is kept in extra.
        name = "$" + event_type

    original = raw.get("timestamp")
    if original is None:
        ts = ctx.received_at
        original_ts = None
    else:
        original_ts = parse_time(original, "timestamp")
        ts = original_ts
        if ctx.correct_skew:
            try:
                ts = ctx.received_at - (ctx.sent_at - original_ts)
            except OverflowError:  # sentAt and timestamp millennia apart: no real clock is that far off
                raise Rejected("timestamp_out_of_range", "timestamp corrected by sentAt falls outside years 1-9999") from None
    if ts > ctx.future_limit:
        raise Rejected("timestamp_in_future", f"timestamp {ts.isoformat()} is too far in the future")
    if ts < EARLIEST:
        raise Rejected("timestamp_out_of_range", "timestamp is before 1970-01-01")

    properties = _json_object(raw, "properties")
    rule = ctx.rules.get(name) if event_type == "track" else None
    found = plan_violations(rule.validator, properties if properties is not None else {}) if rule else None
    if found and rule.mode == "enforce":
        more = f"; and {len(found) - 1} more" if len(found) > 1 else ""
        raise SchemaViolation(name, f"properties break the tracking plan for {name!r}: {found[0].describe()}{more}")

    # Most events hold only keys with columns: the subset test (in C) skips building a dict.
    rest = None if raw.keys() <= COLUMNS else {k: v for k, v in raw.items() if k not in COLUMNS}
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
        raise Rejected("event_too_large", f"event is {len(encoded)} bytes as stored; the limit is {ctx.max_event_bytes}")
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
