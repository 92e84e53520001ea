"""HTTP only: authorize, read the body and the Idempotency-Key header, call the service, answer.

The ingest routes are the hot path, so they are served without FastAPI's per-request machinery
(IngestRoute): FastAPI documents them from a signature that is never called (the token schemes,
the Idempotency-Key header, the raw body's model), and a request goes straight to `_handle`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from ingest import amplitude, mixpanel, posthog, segment, service
from ingest.envelope import Envelope, Outcome
from ingest.content import ACCEPTED_TYPES, read_body
from shared.idempotency import parse_key
from ingest.schemas import EventIn, IngestResult
from ingest.service import WireFormat
from shared.auth import IngestWriter, write_key_authorizer
from shared.errors import DATABASE_ERRORS, AppError, DatabaseUnavailable
from shared.events import EVENT_TYPES
from shared.openapi import answers, raw_body
from shared.services import services_of


class IngestRoute(APIRoute):
    """A route whose requests go straight to `_handle` for its `kind`, skipping FastAPI's
    dependency solving and request handling, which cost a fifth of an ingest request's CPU in
    the worker (docs/ingest.md). Errors raised in `_handle` take the app's exception handlers
    like any route's (problem+json)."""

    def __init__(self, path: str, endpoint: Any, *, kind: str | None, wire: WireFormat, **kwargs: Any):
        self.kind = kind
        self.wire = wire
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self):
        return functools.partial(_handle, kind=self.kind, wire=self.wire)


async def _handle(request: Request, kind: str | None, wire: WireFormat) -> Response:
    try:
        answer = await _ingest(request, kind, wire)
    except (AppError, *DATABASE_ERRORS) as exc:
        # A vendor's SDK that cannot read problem+json gets the failure in its own shape.
        error = exc if isinstance(exc, AppError) else DatabaseUnavailable()
        shaped = wire.problem(error)
        if shaped is None:
            raise
        return Response(shaped[1], status_code=shaped[0], media_type="application/json", headers=error.headers)
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


async def _ingest(request: Request, kind: str | None, wire: WireFormat) -> service.IngestAnswer:
    authorize = write_key_authorizer(request, "ingest")
    services = services_of(request).role(service.IngestServices)
    with services.admission.slot():
        body, media = await read_body(request, services.settings.max_body_bytes)
        return await service.ingest(services, service.IngestRequest(
            body=body,
            media_type=media,
            format=wire,
            kind=kind,
            path=request.scope["path"],
            idempotency_key=parse_key(request.headers.getlist("idempotency-key")),
            authorize=authorize,
        ))


async def _documented(
    principal: IngestWriter, idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
) -> Response:
    """Never called: the signature is what OpenAPI shows (IngestRoute serves the route)."""
    raise NotImplementedError


router = APIRouter(tags=["ingest"])

ANSWERS = answers("ingest", {
    400: "Malformed JSON, no batch list, an empty batch, or a bad Idempotency-Key",
    409: "A request with this Idempotency-Key is in flight",
    413: "Too many events, or the body is too large after decompression",
    415: "Unsupported Content-Type or Content-Encoding",
    422: "Idempotency-Key reused with another body",
})


def _route(path: str, kind: str | None, model: str, summary: str, documented: bool = True,
           wire: WireFormat = segment) -> None:
    router.add_api_route(
        path, _documented, methods=["POST"], response_model=IngestResult, responses=ANSWERS,
        openapi_extra=raw_body(model, ACCEPTED_TYPES), summary=summary, name=kind or "batch",
        route_class_override=functools.partial(IngestRoute, kind=kind, wire=wire), include_in_schema=documented,
    )


# The batch model's limit follows the settings, so it is built per app (tally/app.py) and
# referred to here by name.
_route("/v1/batch", None, "BatchIn", "Store a batch of Segment-format events exactly once")
for _kind in EVENT_TYPES:
    _route(f"/v1/{_kind}", _kind, EventIn.__name__, f"Store one {_kind} event exactly once")

# The same endpoints under the paths SDKs post to (docs/ingest.md, "Paths"), served alike but
# left out of the document: Segment's browser SDK (the first letter of the type; /v1/b when
# batching), Segment's historical batch alias, and RudderStack's beacon (its key in the query).
BATCH_ALIASES = ("/v1/b", "/v1/import", "/beacon/v1/batch")
for _path in BATCH_ALIASES:
    _route(_path, None, "BatchIn", "Alias of /v1/batch", documented=False)
for _kind in EVENT_TYPES:
    _route(f"/v1/{_kind[0]}", _kind, EventIn.__name__, f"Alias of /v1/{_kind}", documented=False)


class PostHogOrAmplitude:
    """`/batch` is PostHog's (with `batch`) and Amplitude's (with `events`): the body says which."""

    NAME = "posthog or amplitude"

    @staticmethod
    def parse(body: bytes, media_type: str | None) -> tuple[WireFormat, Any]:
        payload = posthog.parse(body, media_type)  # a JSON object or array, or 400
        if isinstance(payload, dict) and "events" in payload and "batch" not in payload:
            return amplitude, amplitude.sized(payload, len(body))
        return posthog, payload

    @staticmethod
    def credential(payload: tuple[WireFormat, Any]) -> object:
        return payload[0].credential(payload[1])

    @staticmethod
    def envelope(payload: tuple[WireFormat, Any], kind: str | None, max_batch_events: int) -> Envelope:
        return payload[0].envelope(payload[1], kind, max_batch_events)

    @staticmethod
    def answer(outcome: Outcome, envelope: Envelope) -> tuple[int, bytes]:
        return (amplitude if isinstance(envelope, amplitude.Sized) else posthog).answer(outcome, envelope)

    @staticmethod
    def problem(error: AppError) -> tuple[int, bytes] | None:
        return amplitude.problem(error)  # PostHog's SDK reads only the status; Amplitude's needs the body


# The other vendors' paths (docs/ingest.md, "Other vendors"): the same endpoint, their formats.
VENDOR_ROUTES: tuple[tuple[str, str | None, WireFormat], ...] = (
    ("/batch", None, PostHogOrAmplitude),
    *((path, None, posthog) for path in ("/batch/", "/e/", "/e", "/capture/", "/capture", "/i/v0/e/", "/i/v0/e")),
    ("/i/v1/analytics/events", None, posthog.V1),
    ("/track", None, mixpanel), ("/import", None, mixpanel),
    ("/engage", "engage", mixpanel), ("/groups", "groups", mixpanel),
    ("/2/httpapi", None, amplitude),
)
for _path, _kind, _wire in VENDOR_ROUTES:
    _route(_path, _kind, "BatchIn", f"{_wire.NAME}'s wire format", documented=False, wire=_wire)
