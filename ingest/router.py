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

from ingest import service
from ingest.content import ACCEPTED_TYPES, read_body
from ingest.idempotency import parse_key
from ingest.schemas import EventIn, IngestResult
from shared.auth import IngestWriter, write_key_authorizer
from shared.events import EVENT_TYPES
from shared.openapi import answers, raw_body
from shared.services import services_of


class IngestRoute(APIRoute):
    """A route whose requests go straight to `_handle` for its `kind`, skipping FastAPI's
    dependency solving and request handling, which cost a fifth of an ingest request's CPU in
    the worker (docs/ingest.md). Errors raised in `_handle` take the app's exception handlers
    like any route's (problem+json)."""

    def __init__(self, path: str, endpoint: Any, *, kind: str | None, **kwargs: Any):
        self.kind = kind
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self):
        return functools.partial(_handle, kind=self.kind)


async def _handle(request: Request, kind: str | None) -> Response:
    authorize = write_key_authorizer(request, "ingest")
    services = services_of(request).role(service.IngestServices)
    with services.admission.slot():
        body = await read_body(request, services.settings.max_body_bytes)
        answer = await service.ingest(services, service.IngestRequest(
            body=body,
            kind=kind,
            path=request.scope["path"],
            idempotency_key=parse_key(request.headers.getlist("idempotency-key")),
            authorize=authorize,
        ))
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


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


def _route(path: str, kind: str | None, model: str, summary: str, documented: bool = True) -> None:
    router.add_api_route(
        path, _documented, methods=["POST"], response_model=IngestResult, responses=ANSWERS,
        openapi_extra=raw_body(model, ACCEPTED_TYPES), summary=summary, name=kind or "batch",
        route_class_override=functools.partial(IngestRoute, kind=kind), include_in_schema=documented,
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
