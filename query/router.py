"""HTTP only: parse parameters, call the service, answer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from query import service
from query.schemas import AggregatePage, EventPage, EventRow
from shared.auth import QueryReader
from shared.db import Pool
from shared.errors import problem_responses

router = APIRouter(tags=["query"])

ERRORS = problem_responses({
    400: "The cursor was altered, or issued for another project or other parameters (invalid_cursor)",
    401: "Missing or invalid credentials",
    403: "Token lacks scope query",
    422: "A parameter is invalid; the problem names it",
    503: "Database unavailable; retry after Retry-After",
})

From = Annotated[str | None, Query(alias="from", description="ISO-8601; without an offset, read in tz.")]
To = Annotated[str | None, Query(description="ISO-8601, exclusive.")]
Events = Annotated[list[str] | None, Query(alias="event", description="Repeat to match several event names.")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.get(
    "/v1/aggregates", response_model=AggregatePage, response_model_exclude_none=True, responses=ERRORS,
    summary="Event counts and unique users per bucket and event name",
)
async def aggregates(
    request: Request,
    principal: QueryReader,
    pool: Pool,
    from_: From = None,
    to: To = None,
    interval: Literal["hour", "day", "total"] = "day",
    event: Events = None,
    metrics: Annotated[str, Query(description="Comma list of count, unique_users.")] = "count",
    tz: Annotated[str, Query(description="IANA zone for day boundaries.")] = "UTC",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    params = service.AggregateParams(from_, to, interval, event, metrics, tz, limit, cursor)
    return _json(await service.aggregates(pool, principal, params, state.cursor_key, state.query_metrics))


@router.get("/v1/events", response_model=EventPage, responses=ERRORS, summary="Stored events, newest first")
async def events(
    request: Request,
    principal: QueryReader,
    pool: Pool,
    event: Events = None,
    user: Annotated[str | None, Query(description="Matches userId or anonymousId.")] = None,
    type: Literal["track", "identify", "page", "screen", "group", "alias"] | None = None,
    from_: From = None,
    to: To = None,
    violations: Annotated[bool | None, Query(
        description="true: only events stored flagged by the tracking plan; false: only the others."
    )] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    state = request.app.state
    filters = service.EventFilters(event, user, type, from_, to, limit, cursor, violations)
    return _json(await service.list_events(pool, principal, filters, state.cursor_key, state.query_metrics))


@router.get(
    "/v1/events/{message_id:path}", response_model=EventRow, responses={
        **ERRORS, **problem_responses({404: "No event with this messageId in the caller's project"}),
    },
    summary="One stored event by messageId",
)
async def event_by_id(request: Request, principal: QueryReader, pool: Pool, message_id: str) -> Response:
    return _json(await service.get_event(pool, principal, message_id, request.app.state.query_metrics))
