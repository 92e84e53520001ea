"""HTTP only: read the body and the conditional headers, call the service, answer with ETags."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response

from plans import service
from plans.schemas import NO_NUL, SchemaIn, SchemaPage, SchemaReplace, SchemaResult
from shared.auth import Admin
from shared.body import read_raw
from shared.events import MAX_EVENT_NAME
from shared.openapi import answers, raw_body
from shared.services import ServicesDep

router = APIRouter(tags=["tracking plan"])
# Request bodies are read raw (shared.body: bounded, exact numbers); these models document them.
DOCUMENTED_MODELS = [SchemaIn, SchemaReplace]

NAME_ERROR = f"Event name empty, over {MAX_EVENT_NAME} characters or holding NUL"
BODY_ERRORS = {
    400: "Body is not valid JSON (invalid_json)",
    413: "Body over TALLY_MAX_BODY_BYTES",
    422: "A field is invalid (invalid_parameter), the schema does not compile (invalid_schema), "
         "or is over TALLY_MAX_SCHEMA_BYTES as JSON (schema_too_large)",
}

Event = Annotated[str, Path(
    min_length=1, max_length=MAX_EVENT_NAME, pattern=NO_NUL,
    description="The event name, percent-encoded; it may contain spaces, slashes and any Unicode.",
)]
IfMatch = Annotated[str | None, Header(
    alias="If-Match", description='The ETag of the version to change, or `*` for any; else 412.',
)]
IfNoneMatch = Annotated[str | None, Header(
    alias="If-None-Match", description="An ETag the client holds: 304 while it is still current.",
)]


async def _read(request: Request, services: ServicesDep) -> bytes:
    return await read_raw(request, services.settings.max_body_bytes)


def _answer(resource: service.Resource, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        resource.body, status_code=status, media_type="application/json", headers={"ETag": resource.etag, **(headers or {})},
    )


def location(event: str) -> str:
    # Slashes are encoded too, so the name is one path segment; a name of only dots is encoded
    # as well, or clients would remove it as a dot segment ("/v1/schemas/.." is "/v1/").
    encoded = quote(event, safe="")
    return "/v1/schemas/" + (encoded.replace(".", "%2E") if event in (".", "..") else encoded)


ETAG_HEADER = {"ETag": {"description": "Strong ETag of this version, new on every write.", "schema": {"type": "string"}}}


@router.post(
    "/v1/schemas", status_code=201, response_model=SchemaResult,
    responses={
        201: {"headers": {**ETAG_HEADER, "Location": {"description": "The schema's URL.", "schema": {"type": "string"}}}},
        **answers("admin", {**BODY_ERRORS, 409: "This event already has a schema (schema_exists)"}),
    },
    openapi_extra=raw_body("SchemaIn"), summary="Create the schema of an event name",
)
async def create(request: Request, principal: Admin, services: ServicesDep) -> Response:
    body = await _read(request, services)
    resource = await service.create_schema(services.pool, principal, body, services.settings.max_schema_bytes)
    return _answer(resource, 201, {"Location": location(resource.event)})


@router.get(
    "/v1/schemas", response_model=SchemaPage,
    responses=answers("admin", {
        400: "The cursor was altered, or issued for another project (invalid_cursor)",
        422: "limit out of 1 to 1000",
    }),
    summary="The project's schemas by event name (byte order), keyset-paginated",
)
async def list_(
    principal: Admin,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> Response:
    body = await service.list_schemas(services.pool, principal, limit, cursor, services.cursor_key)
    return Response(body, media_type="application/json")


@router.get(
    "/v1/schemas/{event:path}", response_model=SchemaResult,
    responses={
        200: {"headers": ETAG_HEADER},
        304: {"description": "If-None-Match holds the current ETag", "headers": ETAG_HEADER},
        **answers("admin", {404: "No schema for this event (schema_not_found)", 422: NAME_ERROR}),
    },
    summary="One event's schema, with its ETag",
)
async def read(principal: Admin, services: ServicesDep, event: Event, if_none_match: IfNoneMatch = None) -> Response:
    resource = await service.get_schema(services.pool, principal, event)
    if service.none_match(if_none_match, resource.etag):
        return Response(status_code=304, headers={"ETag": resource.etag})
    return _answer(resource)


@router.put(
    "/v1/schemas/{event:path}", response_model=SchemaResult,
    responses={
        200: {"headers": ETAG_HEADER},
        **answers("admin", {
            **BODY_ERRORS,
            404: "No schema for this event; create it with POST /v1/schemas (schema_not_found)",
            412: "If-Match was sent and is not the current ETag, or there is no schema (precondition_failed)",
            422: BODY_ERRORS[422] + "; or the body's event is not the path's (event_mismatch)",
        }),
    },
    openapi_extra=raw_body("SchemaReplace"),
    summary="Replace an existing schema (the version goes up by one)",
)
async def replace(
    request: Request, principal: Admin, services: ServicesDep, event: Event, if_match: IfMatch = None
) -> Response:
    body = await _read(request, services)
    resource = await service.replace_schema(
        services.pool, principal, event, body, service.if_match(if_match), services.settings.max_schema_bytes,
    )
    return _answer(resource)


@router.delete(
    "/v1/schemas/{event:path}", status_code=204,
    responses=answers("admin", {
        404: "No schema for this event (schema_not_found)",
        412: "If-Match was sent and is not the current ETag, or there is no schema (precondition_failed)",
        422: NAME_ERROR,
    }),
    summary="Delete an event's schema",
)
async def delete(principal: Admin, services: ServicesDep, event: Event, if_match: IfMatch = None) -> Response:
    await service.delete_schema(services.pool, principal, event, service.if_match(if_match))
    return Response(status_code=204)
