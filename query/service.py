"""Use cases: aggregate pages and event listings for the caller's project, keyset-paginated.

The project always comes from the principal. A cursor carries the position and the resolved
time range of the first page, so a walk with the default range ("the last 7 days") keeps one
range from its first page to its last even as `now` moves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool

from query import sql
from query.buckets import UTC, Bucket, Grid, floor_hour, from_micros, micros, parse_instant, parse_zone
from shared import cursor
from shared.auth import Principal
from shared.errors import DatabaseUnavailable, InvalidParameter, NotFound
from shared.metrics import DURATION_BUCKETS, Metrics
from shared.projects import ProjectSettings

METRICS = ("count", "unique_users")
DEFAULT_RANGE = timedelta(days=7)
UTC_ZONE = ZoneInfo("UTC")
# Buckets fetched per round trip grow 1, 4, 16...: a full page usually needs one short window,
# and sparse data is found in a few steps instead of aggregating the whole range at once.
FIRST_WINDOW, WINDOW_GROWTH, MAX_WINDOW = 1, 4, 1024
ROW_BUCKETS = (0, 1, 10, 50, 100, 250, 500, 1000)


class QueryMetrics:
    def __init__(self, metrics: Metrics):
        self.duration = metrics.histogram(
            "tally_query_duration_seconds", "Time to answer one query request, by endpoint.", ["endpoint"],
            DURATION_BUCKETS,
        )
        self.rows = metrics.histogram(
            "tally_query_rows_returned", "Rows in one query response, by endpoint.", ["endpoint"], ROW_BUCKETS
        )

    def observe(self, endpoint: str, started: float, rows: int) -> None:
        self.duration.labels(endpoint).observe(time.perf_counter() - started)
        self.rows.labels(endpoint).observe(rows)


@dataclass(frozen=True, slots=True)
class QueryServices:
    """What a query request needs besides its principal and parameters; one per process."""

    pool: AsyncConnectionPool
    metrics: QueryMetrics
    # Where each project's kept data starts (shared/projects.py): aggregates say so.
    projects: ProjectSettings

    @classmethod
    def create(cls, pool: AsyncConnectionPool, metrics: Metrics, projects: ProjectSettings) -> QueryServices:
        return cls(pool=pool, metrics=QueryMetrics(metrics), projects=projects)


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregateParams:
    start: str | None
    end: str | None
    interval: str
    events: list[str] | None
    metrics: str
    tz: str
    limit: int
    cursor: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilters:
    events: list[str] | None
    user: str | None
    type: str | None
    start: str | None
    end: str | None
    limit: int
    cursor: str | None
    # True: only events stored flagged by the tracking plan; False: only those that were not.
    violations: bool | None = None


def parse_metrics(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if not names or unknown:
        raise InvalidParameter.of("metrics", f"use a comma list of {', '.join(METRICS)}; unknown: {', '.join(unknown)}")
    return [name for name in METRICS if name in names]


def _ordered(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidParameter.of("from", "must not be after to")


def _range(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    end = end if end is not None else now
    start = start if start is not None else end - DEFAULT_RANGE
    _ordered(start, end)
    return start, end


async def aggregates(services: QueryServices, principal: Principal, p: AggregateParams, key: bytes) -> bytes:
    started = time.perf_counter()
    zone = parse_zone(p.tz)
    wanted = parse_metrics(p.metrics)
    events = sorted(set(p.events)) if p.events else None
    start = parse_instant(p.start, "from", zone) if p.start is not None else None
    end = parse_instant(p.end, "to", zone) if p.end is not None else None
    scope = cursor.scope_of(
        "aggregates", interval=p.interval, tz=zone.key, events=events, metrics=wanted,
        start=None if start is None else micros(start), end=None if end is None else micros(end),
    )
    after: tuple[datetime, str] | None = None
    if p.cursor is not None:
        range_start, range_end, after_label, after_event = cursor.open_cursor(key, principal.project, scope, p.cursor)
        start, end = from_micros(range_start), from_micros(range_end)
        after = (from_micros(after_label), after_event)
    else:
        start, end = _range(start, end, datetime.now(UTC))
    # Nothing before the retention is counted, even while the retention job has yet to remove
    # it: the answer is what is kept, and says from when (the range itself, and so the cursor
    # and the bucket labels, stay as asked).
    if not services.projects.loaded:
        raise DatabaseUnavailable("the project settings are not loaded yet")
    kept = services.projects.retained_from(principal.project, datetime.now(UTC))
    grid = Grid(p.interval, zone, start, end, counted_from=kept)

    rows: list[CountRow] = []
    first = grid.label_of(grid.counted_from)
    buckets = grid.buckets_from(max(after[0], first) if after else first)
    size = FIRST_WINDOW
    async with services.pool.connection() as conn:
        while len(rows) <= p.limit:
            window = list(islice(buckets, size))
            if not window:
                break
            rows += await _counts(conn, principal.project, window, events, after, "unique_users" in wanted,
                                  p.limit + 1 - len(rows))
            after = None  # later windows hold only buckets past the cursor's
            size = min(size * WINDOW_GROWTH, MAX_WINDOW)
            if len(rows) <= p.limit and grid.interval != "total":
                # Skip empty stretches: a sparse decade of hours is a few round trips, not thousands.
                following = await _next_hour_with_events(conn, principal.project, window[-1].hi)
                if following is None or following >= end:
                    break
                buckets = grid.buckets_from(grid.label_of(following))

    next_cursor = None
    if len(rows) > p.limit:
        rows = rows[: p.limit]
        last = rows[-1]
        next_cursor = cursor.issue(key, principal.project, scope, [micros(start), micros(end), micros(last.label), last.event])
    data = []
    for row in rows:
        item = {"bucket": grid.render(row.label), "event": row.event}
        if "count" in wanted:
            item["count"] = row.n
        if "unique_users" in wanted:
            item["unique_users"] = row.users
        data.append(item)
    services.metrics.observe("aggregates", started, len(data))
    return orjson.dumps({"data": data, "next_cursor": next_cursor, "retained_from": kept}, option=orjson.OPT_UTC_Z)


@dataclass(frozen=True, slots=True)
class CountRow:
    label: datetime
    event: str
    n: int
    users: int | None  # None unless unique users were asked for


async def _counts(
    conn: AsyncConnection, project: str, window: list[Bucket], events: list[str] | None,
    after: tuple[datetime, str] | None, unique_users: bool, limit: int,
) -> list[CountRow]:
    statement = sql.counts_window(events=events is not None, after=after is not None, unique_users=unique_users)
    params = {
        "project": project,
        "label": [b.label for b in window],
        "lo": [b.lo for b in window],
        "hi": [b.hi for b in window],
        "flo": [b.flo for b in window],
        "fhi": [b.fhi for b in window],
        "dlo": [b.dlo for b in window],
        "dhi": [b.dhi for b in window],
        "events": events,
        "after_label": after[0] if after else None,
        "after_event": after[1] if after else None,
        "limit": limit,
    }
    cur = await conn.cursor(row_factory=namedtuple_row).execute(statement, params)
    return [CountRow(r.label, r.event, r.n, r.users if unique_users else None) for r in await cur.fetchall()]


async def _next_hour_with_events(conn: AsyncConnection, project: str, at: datetime) -> datetime | None:
    # Every stored event is in the hourly counts or their unfolded deltas, so the first hour at
    # or after `at` holding any is a lower bound for the next bucket with rows (filtered or not).
    cur = await conn.execute(sql.NEXT_HOUR_WITH_EVENTS, {"project": project, "at": floor_hour(at)})
    (first,) = await cur.fetchone()
    return None if first is None else max(first, at)


async def list_events(services: QueryServices, principal: Principal, f: EventFilters, key: bytes) -> bytes:
    started = time.perf_counter()
    start = parse_instant(f.start, "from", UTC_ZONE) if f.start is not None else None
    end = parse_instant(f.end, "to", UTC_ZONE) if f.end is not None else None
    _ordered(start, end)
    events = sorted(set(f.events)) if f.events else None
    scope = cursor.scope_of(
        "events", events=events, user=f.user, type=f.type,
        start=None if start is None else micros(start), end=None if end is None else micros(end),
        **({} if f.violations is None else {"violations": f.violations}),
    )
    after = None
    if f.cursor is not None:
        after_ts, after_id = cursor.open_cursor(key, principal.project, scope, f.cursor)
        after = (from_micros(after_ts), after_id)
    params = {
        "project": principal.project, "events": events, "user": f.user, "type": f.type,
        "start": start, "end": end, "limit": f.limit + 1,
        "after_ts": after[0] if after else None, "after_id": after[1] if after else None,
    }
    filters = {name for name in ("events", "user", "type", "start", "end") if params[name] is not None}
    if after is not None:
        filters.add("after")
    if f.violations is not None:
        filters.add("violations" if f.violations else "no_violations")
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=namedtuple_row)
        rows = await (await cur.execute(sql.list_events(frozenset(filters)), params)).fetchall()
    next_cursor = None
    if len(rows) > f.limit:
        rows = rows[: f.limit]
        next_cursor = cursor.issue(key, principal.project, scope, [micros(rows[-1].ts), rows[-1].message_id])
    services.metrics.observe("events", started, len(rows))
    return orjson.dumps({"data": [_event_item(r) for r in rows], "next_cursor": next_cursor}, option=orjson.OPT_UTC_Z)


async def get_event(services: QueryServices, principal: Principal, message_id: str) -> bytes:
    started = time.perf_counter()
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=namedtuple_row)
        row = await (await cur.execute(sql.GET_EVENT, {"project": principal.project, "message_id": message_id})).fetchone()
    services.metrics.observe("event", started, 0 if row is None else 1)
    if row is None:
        raise NotFound("no event with this messageId in your project")
    return orjson.dumps(_event_item(row), option=orjson.OPT_UTC_Z)


def _event_item(row: Any) -> dict:
    """An EventRow from a row of sql.EVENT_COLUMNS. JSON columns are read as text and embedded
    as they are: no parse and re-dump per event."""
    return {
        "messageId": row.message_id,
        "type": row.type,
        "event": row.event,
        "userId": row.user_id,
        "anonymousId": row.anonymous_id,
        "timestamp": row.ts,
        "originalTimestamp": row.original_timestamp,
        "sentAt": row.sent_at,
        "receivedAt": row.received_at,
        "properties": _fragment(row.properties),
        "context": _fragment(row.context),
        "traits": _fragment(row.traits),
        "extra": _fragment(row.extra),
        "violations": _fragment(row.violations),
    }


def _fragment(text: str | None) -> orjson.Fragment | None:
    return None if text is None else orjson.Fragment(text)
