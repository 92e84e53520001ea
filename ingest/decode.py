"""From a request body to its events: the envelope of a batch or a single call.

Whole-request problems (not JSON, no batch list, too many events, a bad sentAt) raise here,
before any event is looked at; the events themselves are checked one by one in ingest/checks.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.checks import parse_time
from shared import jsonb
from shared.errors import BadRequest, PayloadTooLarge


@dataclass(frozen=True, slots=True)
class Envelope:
    events: list[Any]
    sent_at: datetime | None
    # Segment's batch-level context, merged under each event's own.
    context: dict | None


def parse(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 400. Its `writeKey` (browser SDKs send the key there) is
    read by the caller before anything else is checked, so that a request without a key is 401."""
    payload = jsonb.decode(body)
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


def unpack(payload: dict[str, Any], kind: str | None, max_batch_events: int) -> Envelope:
    """The events of a batch body (`kind` None) or of a single-call body, or a whole-request 4xx."""
    if kind is None:
        events = payload.get("batch")
        if not isinstance(events, list):
            raise BadRequest('body must be an object with a "batch" list of events')
        if not events:
            raise BadRequest("batch is empty")
        if len(events) > max_batch_events:
            raise PayloadTooLarge(f"batch has {len(events)} events; the limit is {max_batch_events}")
        context = payload.get("context")
        if context is not None and not isinstance(context, dict):
            raise BadRequest("batch context must be a JSON object")
        return Envelope(events, _sent_at(payload.get("sentAt")), context)
    # A single-call body is the event itself; sentAt and writeKey belong to the request.
    event = {k: v for k, v in payload.items() if k not in ("sentAt", "writeKey")}
    return Envelope([event], _sent_at(payload.get("sentAt")), None)


def _sent_at(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, "sentAt")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
