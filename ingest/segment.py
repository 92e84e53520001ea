"""Segment's wire format, Tally's own: the envelope of a batch or a single call, and its answer.

Every wire format (this one, ingest/posthog.py, mixpanel.py, amplitude.py) is a module of the
same five functions (`WireFormat` in ingest/service.py): `parse` the body, find the
`credential` in it, turn it into an `Envelope` of Segment-shaped events, and render the
`answer` (and, where the vendor's SDK needs it, a `problem`) the way that SDK reads it. The
events themselves are checked one by one, whatever the format, in ingest/checks.py.

Whole-request problems (not JSON, no batch list, too many events, a bad sentAt) raise here,
before any event is looked at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from ingest.checks import parse_time
from ingest.content import refuse_form
from ingest.envelope import Envelope, Outcome, check_batch_size, parse_object
from shared.errors import AppError, BadRequest

NAME = "segment"


def parse(body: bytes, media_type: str | None) -> dict[str, Any]:
    refuse_form(body, media_type)
    return parse_object(body)


def credential(payload: dict[str, Any]) -> object:
    """The body's `writeKey` (browser SDKs send the key there), read before anything else is
    checked, so that a request without any key is 401 whatever else is wrong with it."""
    return payload.get("writeKey")


def envelope(payload: dict[str, Any], kind: str | None, max_batch_events: int) -> Envelope:
    """The events of a batch body (`kind` None) or of a single-call body, or a whole-request 4xx."""
    if kind is None:
        events = payload.get("batch")
        if not isinstance(events, list):
            raise BadRequest('body must be an object with a "batch" list of events')
        check_batch_size(events, max_batch_events)
        context = payload.get("context")
        if context is not None and not isinstance(context, dict):
            raise BadRequest("batch context must be a JSON object")
        return Envelope(events, sent_at_of(payload.get("sentAt")), context, kind)
    # A single-call body is the event itself; sentAt and writeKey belong to the request.
    event = {k: v for k, v in payload.items() if k not in ("sentAt", "writeKey")}
    return Envelope([event], sent_at_of(payload.get("sentAt")), None, kind)


def answer(outcome: Outcome, envelope: Envelope) -> tuple[int, bytes]:
    return 200, orjson.dumps({
        "success": True,
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "rejected": len(outcome.errors),
        "errors": outcome.errors,
    })


def problem(error: AppError) -> tuple[int, bytes] | None:
    return None  # problem+json, as every endpoint of Tally's own


def sent_at_of(value: Any) -> datetime | None:
    """A request's sentAt (None when absent), or 400."""
    if value is None:
        return None
    try:
        return parse_time(value, "sentAt")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
