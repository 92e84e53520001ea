"""HTTP only: the project's settings, erasure jobs and suppressions (scope admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from lifecycle import service
from lifecycle.schemas import Erasure, ErasureIn, ErasurePage, ProjectSettingsOut, SettingsPatch, SuppressionPage
from shared.auth import Admin
from shared.body import read_raw
from shared.events import MAX_USER_ID
from shared.idempotency import parse_key
from shared.openapi import answers, raw_body
from shared.services import ServicesDep

router = APIRouter(tags=["lifecycle"])
# Request bodies are read raw (shared.body: bounded, exact); these models document them.
DOCUMENTED_MODELS = [SettingsPatch, ErasureIn]

BODY_ERRORS = {
    400: "Body is not valid JSON (invalid_json)",
    413: "Body over TALLY_MAX_BODY_BYTES",
    422: "A field is unknown, of the wrong type or out of range (invalid_parameter, naming it)",
}
PAGE_ERRORS = {
    400: "The cursor was altered, or issued for another project (invalid_cursor)",
    422: "limit out of 1 to 1000",
}
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


def _lifecycle(services: ServicesDep) -> service.LifecycleServices:
    return services.role(service.LifecycleServices)


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


@router.get("/v1/project", response_model=ProjectSettingsOut, responses=answers("admin", {}),
            summary="The project's settings: retention")
async def get_project(principal: Admin, services: ServicesDep) -> Response:
    return _json(await service.get_settings(_lifecycle(services), principal))


@router.patch(
    "/v1/project", response_model=ProjectSettingsOut, responses=answers("admin", BODY_ERRORS),
    openapi_extra=raw_body("SettingsPatch", ("application/merge-patch+json", "application/json")),
    summary="Change the project's settings (JSON merge patch); in force on every worker within 2 s",
)
async def patch_project(request: Request, principal: Admin, services: ServicesDep) -> Response:
    body = await read_raw(request, services.settings.max_body_bytes)
    return _json(await service.patch_settings(_lifecycle(services), principal, body))


@router.post(
    "/v1/erasures", status_code=202, response_model=Erasure,
    responses={
        202: {"headers": {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}},
        **answers("admin", {**BODY_ERRORS, 409: "The first request with this Idempotency-Key has not finished"}),
    },
    openapi_extra=raw_body("ErasureIn"),
    summary="Erase every stored event of some ids, and optionally refuse their new events",
)
async def request_erasure(request: Request, principal: Admin, services: ServicesDep) -> Response:
    body = await read_raw(request, services.settings.max_body_bytes)
    key = parse_key(request.headers.getlist("idempotency-key"))
    answer = await service.request_erasure(_lifecycle(services), principal, body, request.url.path, key)
    return _json(answer.body, answer.status, answer.headers)


@router.get("/v1/erasures", response_model=ErasurePage, responses=answers("admin", PAGE_ERRORS),
            summary="The project's erasure jobs, newest first, keyset-paginated")
async def list_erasures(principal: Admin, services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> Response:
    return _json(await service.list_erasures(_lifecycle(services), principal, limit, cursor, services.cursor_key))


@router.get("/v1/erasures/{erasure_id}", response_model=Erasure,
            responses=answers("admin", {404: "No such job in this project (not_found)", 422: "Id over 64 characters"}),
            summary="One erasure job")
async def get_erasure(
    principal: Admin, services: ServicesDep, erasure_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    return _json(await service.get_erasure(_lifecycle(services), principal, erasure_id))


@router.get("/v1/suppressions", response_model=SuppressionPage, responses=answers("admin", PAGE_ERRORS),
            summary="The project's suppressed ids, in byte order, keyset-paginated")
async def list_suppressions(principal: Admin, services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> Response:
    return _json(await service.list_suppressions(_lifecycle(services), principal, limit, cursor, services.cursor_key))


@router.delete(
    "/v1/suppressions/{user_id:path}", status_code=204,
    responses=answers("admin", {404: "This id is not suppressed in this project (not_found)",
                                422: f"Id empty, over {MAX_USER_ID} characters or holding NUL"}),
    summary="Lift a suppression: the id's new events are accepted again (within 2 s on every worker)",
)
async def lift_suppression(
    principal: Admin, services: ServicesDep,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID, description="The id, percent-encoded.")],
) -> Response:
    await service.lift_suppression(_lifecycle(services), principal, user_id)
    return Response(status_code=204)
