"""What the other vendors' wire formats share: ids for events that come without one, a person's
ids as strings, epoch times as ISO-8601, and where the format is noted on each stored event."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

import orjson


def derived_id(wire: str, event: Any) -> str:
    """A deterministic messageId for an event its SDK sent without an id: the hash of its
    content, so that the SDK's retry of the same event is a duplicate, as with an id."""
    try:
        content = orjson.dumps(event, option=orjson.OPT_SORT_KEYS, default=repr)
    except TypeError:  # an integer past 64 bits, nesting too deep: the checks reject the event anyway
        content = repr(event).encode("utf-8", "surrogatepass")
    return f"{wire}-{hashlib.sha256(content).hexdigest()[:32]}"


def epoch_time(value: Any, per_second: int) -> Any:
    """An epoch time (seconds or milliseconds, `per_second` units a second) as ISO-8601 UTC;
    anything else is passed on for the checks to reject (invalid_timestamp)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    try:
        return datetime.fromtimestamp(value / per_second, timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return "out of range"


def with_wire(context: Any, wire: str) -> Any:
    """The event's context noting the wire format it came in (`context.wire`), which
    GET /v1/events shows; a context that is not an object is left for the checks to reject."""
    if context is None:
        return {"wire": wire}
    if isinstance(context, dict):
        return {**context, "wire": wire}
    return context


def pop(mapping: dict, *keys: str) -> Any:
    """The first of `keys` present in `mapping`, removed from it (the others are removed too)."""
    found = None
    for key in keys:
        value = mapping.pop(key, None)
        if found is None:
            found = value
    return found
