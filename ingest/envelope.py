"""What every wire format decodes a request into, and what the store tells it back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import jsonb
from shared.errors import BadRequest, PayloadTooLarge


@dataclass(frozen=True, slots=True)
class Envelope:
    # Segment-shaped events, one per event the client sent, in its order: a rejection's `index`
    # is the client's own index.
    events: list[Any]
    sent_at: datetime | None
    # Segment's batch-level context, merged under each event's own.
    context: dict | None
    # The event type every event must have (a single-call path such as /v1/track); None: any.
    kind: str | None = None
    # The vendor's own id of each event (PostHog's uuid), for answers that are keyed by it.
    ids: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    accepted: int  # stored by this request
    duplicates: int  # stored before, or repeated within the request
    errors: list[dict]  # per-event rejections: index, messageId, code, detail


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (the one exact decoder), or 400."""
    payload = jsonb.decode(body)
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


def check_batch_size(events: list[Any], max_batch_events: int) -> None:
    """400 for an empty batch, 413 for one over TALLY_MAX_BATCH_EVENTS."""
    if not events:
        raise BadRequest("batch is empty")
    if len(events) > max_batch_events:
        raise PayloadTooLarge(f"batch has {len(events)} events; the limit is {max_batch_events}")
