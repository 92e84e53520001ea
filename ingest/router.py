"""HTTP only: read the body, call the service, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from ingest import service
from ingest.body import read_body
from ingest.schemas import BatchIn, EventIn, IngestResult
from shared.auth import IngestWriter
from shared.db import Pool
from shared.errors import problem_responses

router = APIRouter(tags=["ingest"])
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


async def _ingest(request: Request, principal, pool, kind: str | None) -> Response:
    state = request.app.state
    settings = state.settings
    with state.admission.slot():
        body = await read_body(request, settings.max_body_bytes)
        result = await service.ingest(
            pool, principal, body,
            kind=kind,
            path=request.url.path,
            idempotency_key=service.parse_idempotency_key(request.headers.getlist("idempotency-key")),
            settings=settings,
            metrics=state.ingest_metrics,
            plan=state.tracking_plan,
            writers=state.writers,
        )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return Response(result.body, status_code=result.status, media_type="application/json", headers=headers)


@router.post(
    "/v1/batch", response_model=IngestResult, responses=ERRORS, openapi_extra=_body_doc(BatchIn),
    summary="Store a batch of Segment-format events exactly once",
)
async def batch(
    request: Request,
    principal: IngestWriter,
    pool: Pool,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    return await _ingest(request, principal, pool, None)


def _single(kind: str):
    async def endpoint(
        request: Request,
        principal: IngestWriter,
        pool: Pool,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> Response:
        return await _ingest(request, principal, pool, kind)

    endpoint.__name__ = kind
    router.add_api_route(
        f"/v1/{kind}", endpoint, methods=["POST"], response_model=IngestResult, responses=ERRORS,
        openapi_extra=_body_doc(EventIn), summary=f"Store one {kind} event exactly once",
    )


for _kind in ("track", "identify", "page", "screen", "group", "alias"):
    _single(_kind)
