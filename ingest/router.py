"""HTTP only: read the body, call the service, answer.

The ingest routes are the hot path, so they are served without FastAPI's per-request machinery
(IngestRoute): FastAPI still documents them from their signatures, but a request goes straight
to `_handle`, which authorizes and reads the body itself.
"""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from ingest import service
from ingest.body import read_body
from ingest.schemas import BatchIn, EventIn, IngestResult
from shared.auth import IngestWriter, authorize
from shared.errors import problem_responses


class IngestRoute(APIRoute):
    """Documented from the endpoint's signature (token, Idempotency-Key), dispatched to `_handle`.

    Solving the signature's dependencies and the rest of FastAPI's request handling cost a fifth
    of an ingest request's CPU in the worker (single-event posts, 2 workers, 16 clients, two A/B
    pairs: 973-1034 -> 743-782 us of worker CPU per request). Errors raised in `_handle` take
    the app's exception handlers like any route's (problem+json).
    """

    def get_route_handler(self):
        kind = self.endpoint.__name__
        return functools.partial(_handle, kind=None if kind == "batch" else kind)


router = APIRouter(tags=["ingest"], route_class=IngestRoute)
# Request bodies are read raw (orjson, no model per event); these models only document them.
DOCUMENTED_MODELS = (BatchIn, EventIn)

ERRORS = problem_responses({
    400: "Malformed JSON, no batch list, an empty batch, or a bad Idempotency-Key",
    401: "Missing or invalid credentials",
    403: "Token lacks scope ingest",
    409: "A request with this Idempotency-Key is in flight",
    413: "Too many events, or the body is too large after decompression",
    415: "Unsupported Content-Type or Content-Encoding",
    422: "Idempotency-Key reused with another body",
    503: "Database unavailable; retry after Retry-After",
})


def _body_doc(model) -> dict:
    schema_ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema_ref}, "text/plain": {"schema": schema_ref}},
        }
    }


async def _handle(request: Request, kind: str | None) -> Response:
    principal = authorize(request, "ingest")
    state = request.app.state
    settings = state.settings
    with state.admission.slot():
        body = await read_body(request, settings.max_body_bytes)
        result = await service.ingest(
            state.pool, principal, body,
            kind=kind,
            path=request.scope["path"],
            idempotency_key=service.parse_idempotency_key(request.headers.getlist("idempotency-key")),
            settings=settings,
            metrics=state.ingest_metrics,
            plan=state.tracking_plan,
            writers=state.writers,
        )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return Response(result.body, status_code=result.status, media_type="application/json", headers=headers)


def _route(path: str, model, summary: str) -> None:
    kind = path.rsplit("/", 1)[1]

    # The signature is what OpenAPI shows: the ingest token and the Idempotency-Key header.
    async def documented(
        principal: IngestWriter, idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None
    ) -> Response:
        raise NotImplementedError("documentation only: IngestRoute serves this route with _handle")

    documented.__name__ = kind
    router.add_api_route(
        path, documented, methods=["POST"], response_model=IngestResult, responses=ERRORS,
        openapi_extra=_body_doc(model), summary=summary,
    )


_route("/v1/batch", BatchIn, "Store a batch of Segment-format events exactly once")
for _kind in ("track", "identify", "page", "screen", "group", "alias"):
    _route(f"/v1/{_kind}", EventIn, f"Store one {_kind} event exactly once")
