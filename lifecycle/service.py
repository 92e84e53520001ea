"""Use cases of the data lifecycle: a project's settings, erasure jobs and suppressions, and the
two background jobs that remove events (retention, erasure) by one mechanism (lifecycle/sql.py).

Every removal keeps the counts true: the decrements of exactly the removed rows commit with the
removal. A job is recorded before anything is removed, each of its steps is one bounded
transaction, and a step that finds nothing left finishes it: a crash between steps only delays
the job, which any runner resumes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from lifecycle import sql
from lifecycle.schemas import ErasureIn, SettingsPatch
from shared import cursor, idempotency
from shared.auth import Principal
from shared.body import as_model
from shared.counts import SUBTRACT_COUNTS
from shared.errors import InvalidParameter, NotFound
from shared.metrics import Metrics
from shared.outage import OutageLog
from shared.projects import ProjectSettings, retained_from
from shared.settings import Settings
from shared.suppressions import Suppressions

log = logging.getLogger("tally.lifecycle")

# Rows one removal step deletes: small enough that a step holds its row locks and the CPU for
# a fraction of a second beside ingest, large enough that a person's 100k events go in 20 steps.
REMOVE_BATCH = 5000
RETENTION_INTERVAL_SECONDS = 30.0
ERASURE_POLL_SECONDS = 0.5
# A job that keeps failing this long is marked failed, with the reason; shorter outages only
# delay it.
ERASURE_GIVE_UP_SECONDS = 60.0
_RETENTION_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('tally.retention', 0))"


class LifecycleMetrics:
    def __init__(self, metrics: Metrics):
        self.removed = metrics.counter(
            "tally_events_removed_total", "Stored events removed, by reason (retention, erasure).", ["reason"]
        )
        self.erasures = metrics.counter(
            "tally_erasures_total", "Erasure jobs, by outcome (requested, done, failed).", ["outcome"]
        )


@dataclass(frozen=True, slots=True)
class LifecycleServices:
    """What the lifecycle endpoints and jobs need; one per process of a writing role."""

    pool: AsyncConnectionPool
    settings: Settings
    projects: ProjectSettings
    suppressions: Suppressions
    metrics: LifecycleMetrics
    # (project, job id) -> monotonic time of the first of its consecutive failures
    failing: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def suppression_grace(self) -> timedelta:
        """How long after a suppression an event checked against an older copy may still
        commit: a reload, a wait for a connection, a statement, and a second to spare."""
        s = self.settings
        return timedelta(seconds=1.0 + s.db_pool_timeout + s.db_statement_timeout_ms / 1000 + 1.0)


# --- settings ---------------------------------------------------------------------------------


def _settings_view(services: LifecycleServices, project: str, row: Any | None) -> dict:
    own = row["settings"] if row else {}
    days = own["retention_days"] if "retention_days" in own else services.projects.default_retention_days
    return {
        "project": project,
        "retention_days": days,
        "retention_source": "project" if "retention_days" in own else "default",
        "retained_from": retained_from(days, datetime.now(UTC)),
        "updated_at": row["updated_at"] if row else None,
        "updated_by": row["updated_by"] if row else None,
    }


async def get_settings(services: LifecycleServices, principal: Principal) -> bytes:
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        row = await (await cur.execute(sql.GET_SETTINGS, {"project": principal.project})).fetchone()
    return _dump(_settings_view(services, principal.project, row))


async def patch_settings(services: LifecycleServices, principal: Principal, body: bytes) -> bytes:
    patch = as_model(body, SettingsPatch)
    changes = patch.model_dump(include=patch.model_fields_set)
    params = {"project": principal.project, "settings": Jsonb(changes), "now": datetime.now(UTC), "by": principal.sub}
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        row = await (await cur.execute(sql.PATCH_SETTINGS, params)).fetchone()
    services.projects.apply(principal.project, row["settings"])
    log.info("project settings changed", extra={"project": principal.project, "sub": principal.sub,
                                               "fields": sorted(changes)})
    return _dump(_settings_view(services, principal.project, row))


# --- erasure requests -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def erasure_location(job_id: str) -> str:
    return "/v1/erasures/" + job_id


async def request_erasure(
    services: LifecycleServices, principal: Principal, body: bytes, path: str, key: str | None
) -> Answer:
    request = as_model(body, ErasureIn)
    users = sorted(set(request.users))
    project = principal.project
    job_id = "er_" + secrets.token_hex(10)
    now = datetime.now(UTC)
    print_ = idempotency.fingerprint(path, body)
    async with services.pool.connection() as conn, conn.transaction():
        if key is not None:
            stored = await idempotency.claim(conn, project, key, print_, services.settings.idempotency_ttl_seconds)
            if stored is not None:
                status, answer = stored
                replayed = orjson.loads(answer)
                return Answer(status, answer, {"Location": erasure_location(replayed["id"]), "Idempotent-Replayed": "true"})
        cur = conn.cursor(row_factory=dict_row)
        job = await (await cur.execute(sql.CREATE_ERASURE, {
            "project": project, "id": job_id, "users": users, "suppress": request.suppress, "now": now,
            "by": principal.sub,
        })).fetchone()
        if request.suppress:
            await conn.execute(sql.SUPPRESS, {"project": project, "erasure": job_id, "users": users, "now": now,
                                              "by": principal.sub})
        answer = _dump(job)
        if key is not None:
            await idempotency.store(conn, project, key, print_, answer, status=202)
    # Committed: this worker refuses the ids before the 202 leaves; the others within a reload.
    if request.suppress:
        services.suppressions.add(project, frozenset(users))
    services.metrics.erasures.labels("requested").inc()
    log.info("erasure requested", extra={"project": project, "erasure": job_id, "requested_by": principal.sub,
                                         "user_count": len(users), "suppress": request.suppress})
    return Answer(202, answer, {"Location": erasure_location(job_id)})


async def get_erasure(services: LifecycleServices, principal: Principal, job_id: str) -> bytes:
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        job = await (await cur.execute(sql.GET_ERASURE, {"project": principal.project, "id": job_id})).fetchone()
    if job is None:
        raise NotFound(f"no erasure {job_id!r} in this project")
    return _dump(job)


async def list_erasures(services: LifecycleServices, principal: Principal, limit: int, after: str | None,
                        key: bytes) -> bytes:
    scope = cursor.scope_of("erasures")
    after_at = after_id = None
    if after is not None:
        micros, after_id = cursor.open_cursor(key, principal.project, scope, after)
        after_at = EPOCH + timedelta(microseconds=micros)
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        rows = await (await cur.execute(sql.LIST_ERASURES, {
            "project": principal.project, "after_at": after_at, "after_id": after_id, "limit": limit + 1,
        })).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = cursor.issue(key, principal.project, scope, [_micros(last["requested_at"]), last["id"]])
    return _dump({"data": rows, "next_cursor": next_cursor})


# --- suppressions -----------------------------------------------------------------------------


async def list_suppressions(services: LifecycleServices, principal: Principal, limit: int, after: str | None,
                            key: bytes) -> bytes:
    scope = cursor.scope_of("suppressions")
    after_id = cursor.open_cursor(key, principal.project, scope, after)[0] if after is not None else None
    async with services.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        rows = await (await cur.execute(sql.LIST_SUPPRESSIONS, {
            "project": principal.project, "after": after_id, "limit": limit + 1,
        })).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursor.issue(key, principal.project, scope, [rows[-1]["user_id"]])
    return _dump({"data": rows, "next_cursor": next_cursor})


async def lift_suppression(services: LifecycleServices, principal: Principal, user_id: str) -> None:
    if "\x00" in user_id:
        raise InvalidParameter.of("user_id", "must not contain a NUL character", where="path")
    async with services.pool.connection() as conn:
        cur = await conn.execute(sql.LIFT_SUPPRESSION, {"project": principal.project, "user": user_id})
    if cur.rowcount == 0:
        raise NotFound("this id is not suppressed in this project")
    services.suppressions.remove(principal.project, user_id)
    log.info("suppression lifted", extra={"project": principal.project, "sub": principal.sub})


# --- removal ----------------------------------------------------------------------------------


async def remove(conn: AsyncConnection, statement: str, params: dict) -> int:
    """One bounded removal and the decrements of exactly the rows it removed, in the caller's
    transaction; how many went."""
    removed = await (await conn.execute(statement, {**params, "limit": REMOVE_BATCH})).fetchall()
    if removed:
        events, stamps = zip(*removed)
        await conn.execute(SUBTRACT_COUNTS, {"project": params["project"], "events": list(events), "ts": list(stamps)})
    return len(removed)


async def retention_pass(services: LifecycleServices) -> int:
    """Remove every event older than its project's retention; one process at a time (the others
    find the lock taken and leave the pass to it). How many went."""
    now = datetime.now(UTC)
    projects = set(services.projects.projects())
    if services.projects.default_retention_days is not None:
        async with services.pool.connection() as conn:
            projects |= {p for (p,) in await (await conn.execute(sql.PROJECTS_WITH_EVENTS)).fetchall()}
    total = 0
    for project in sorted(projects):
        before = services.projects.retained_from(project, now)
        if before is None:
            continue
        while True:
            async with services.pool.connection() as conn, conn.transaction():
                if not (await (await conn.execute(_RETENTION_LOCK)).fetchone())[0]:
                    return total
                n = await remove(conn, sql.REMOVE_EXPIRED, {"project": project, "before": before})
            if n:
                services.metrics.removed.labels("retention").inc(n)
                total += n
            if n < REMOVE_BATCH:
                break
    if total:
        log.info("retention pass removed events", extra={"events": total})
    return total


async def retention_loop(services: LifecycleServices) -> None:
    outage = OutageLog(log, "retention pass failed", "retention pass works again")
    while True:
        try:
            await retention_pass(services)
            outage.succeeded()
        except Exception as exc:  # the database may be down; the next pass catches up
            outage.failed(exc)
        await asyncio.sleep(RETENTION_INTERVAL_SECONDS)


async def erasure_step(services: LifecycleServices, project: str, job_id: str) -> bool:
    """One bounded step of a job: remove a batch, or finish it. Whether it did anything."""
    ids = {"project": project, "id": job_id}
    async with services.pool.connection() as conn, conn.transaction():
        job = await (await conn.execute(sql.TAKE_ERASURE, ids)).fetchone()
        if job is None:
            return False  # another runner holds this step, or the job is finished
        users, suppress, requested_at, now = job
        n = await remove(conn, sql.REMOVE_USERS, {"project": project, "users": users})
        if n or (suppress and now < requested_at + services.suppression_grace):
            # With suppression, the job sweeps again until no event checked against an older copy
            # of the suppressions can still commit: then none survives the job.
            await conn.execute(sql.ERASURE_PROGRESS, {**ids, "n": n})
            if n:
                services.metrics.removed.labels("erasure").inc(n)
            return n > 0
        erased, by = await (await conn.execute(sql.FINISH_ERASURE, {**ids, "status": "done", "now": now,
                                                                     "error": None})).fetchone()
    services.metrics.erasures.labels("done").inc()
    log.info("erasure done", extra={"project": project, "erasure": job_id, "requested_by": by, "events": erased})
    return True


async def _give_up(services: LifecycleServices, project: str, job_id: str, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'failed'}"
    async with services.pool.connection() as conn:
        await conn.execute(sql.FINISH_ERASURE, {"project": project, "id": job_id, "status": "failed",
                                                "now": datetime.now(UTC), "error": error})
    services.metrics.erasures.labels("failed").inc()
    log.error("erasure failed", extra={"project": project, "erasure": job_id, "error": error})


async def run_erasures(services: LifecycleServices) -> bool:
    """A step of every unfinished job; whether any did something."""
    async with services.pool.connection() as conn:
        jobs = await (await conn.execute(sql.UNFINISHED_ERASURES)).fetchall()
    worked = False
    for project, job_id in jobs:
        try:
            worked |= await erasure_step(services, project, job_id)
            services.failing.pop((project, job_id), None)
        except Exception as exc:
            first = services.failing.setdefault((project, job_id), time.monotonic())
            if time.monotonic() - first >= ERASURE_GIVE_UP_SECONDS:
                await _give_up(services, project, job_id, exc)
                services.failing.pop((project, job_id), None)
            else:
                log.warning("erasure step failed", extra={"project": project, "erasure": job_id,
                                                          "error": type(exc).__name__})
    return worked


async def erasure_loop(services: LifecycleServices) -> None:
    outage = OutageLog(log, "erasure runner failed", "erasure runner works again")
    while True:
        worked = False
        try:
            worked = await run_erasures(services)
            outage.succeeded()
        except Exception as exc:  # the database may be down; jobs wait, and resume
            outage.failed(exc)
        if not worked:
            await asyncio.sleep(ERASURE_POLL_SECONDS)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)
