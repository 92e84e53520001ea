"""HTTP only: parse parameters, call the service, answer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from query import service
from query.schemas import AggregatePage, EventPage, EventRow
from shared.auth import QueryReader
from shared.events import EventType
from shared.openapi import answers
from shared.services import ServicesDep

router = APIRouter(tags=["query"])

ERRORS = {
    400: "The cursor was altered, or issued for another project or other parameters (invalid_cursor)",
    422: "A parameter is invalid; the problem names it",
}
ANSWERS = answers("query", ERRORS)

From = Annotated[str | None, Query(alias="from", description="ISO-8601; without an offset, read in tz.")]
To = Annotated[str | None, Query(description="ISO-8601, exclusive.")]
Events = Annotated[list[str] | None, Query(alias="event", description="Repeat to match several event names.")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]


def _page(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _query(services: ServicesDep) -> service.QueryServices:
    return services.role(service.QueryServices)


@router.get(
    "/v1/aggregates", response_model=AggregatePage, responses=ANSWERS,
    summary="Event counts and unique users per bucket and event name",
)
async def aggregates(
    principal: QueryReader,
    services: ServicesDep,
    from_: From = None,
    to: To = None,
    interval: Literal["hour", "day", "total"] = "day",
    event: Events = None,
    metrics: Annotated[str, Query(description="Comma list of count, unique_users.")] = "count",
    tz: Annotated[str, Query(description="IANA zone for day boundaries.")] = "UTC",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    params = service.AggregateParams(
        start=from_, end=to, interval=interval, events=event, metrics=metrics, tz=tz, limit=limit, cursor=cursor,
    )
    return _page(await service.aggregates(_query(services), principal, params, services.cursor_key))


@router.get("/v1/events", response_model=EventPage, responses=ANSWERS, summary="Stored events, newest first")
async def events(
    principal: QueryReader,
    services: ServicesDep,
    event: Events = None,
    user: Annotated[str | None, Query(description="Matches userId or anonymousId.")] = None,
    type: EventType | None = None,
    from_: From = None,
    to: To = None,
    violations: Annotated[bool | None, Query(
        description="true: only events stored flagged by the tracking plan; false: only the others."
    )] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    filters = service.EventFilters(
        events=event, user=user, type=type, start=from_, end=to, limit=limit, cursor=cursor, violations=violations,
    )
    return _page(await service.list_events(_query(services), principal, filters, services.cursor_key))


@router.get(
    "/v1/events/{message_id:path}", response_model=EventRow,
    responses=answers("query", {**ERRORS, 404: "No event with this messageId in the caller's project"}),
    summary="One stored event by messageId",
)
async def event_by_id(principal: QueryReader, services: ServicesDep, message_id: str) -> Response:
    return _page(await service.get_event(_query(services), principal, message_id))
