"""Use case: store a batch of events exactly once and answer with per-event results.

Whole-request problems (bad JSON, no batch, too many events) raise before anything is stored
(ingest/decode.py). Per-event problems reject that event alone (ingest/checks.py). The events,
their count deltas and, with an Idempotency-Key, the stored answer commit together, before the
response is sent: a 200 means durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from ingest import sql
from ingest.admission import Admission, StatementSlots
from ingest.checks import BatchContext, Rejected, Row, SchemaViolation, is_unicode, to_row
from ingest.envelope import Envelope, Outcome
from ingest.plan import TrackingPlan
from shared import idempotency
from shared.auth import Principal
from shared.counts import APPEND_COUNTS
from shared.errors import AppError, DatabaseUnavailable
from shared.metrics import DURATION_BUCKETS, Metrics
from shared.projects import ProjectSettings
from shared.settings import Settings
from shared.suppressions import Suppressions

log = logging.getLogger("tally.ingest")
IDLE = TransactionStatus.IDLE

BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
PURGE_INTERVAL_SECONDS = 600.0
# Distinct event names one process labels violation metrics with; the rest count as "other",
# so a project with thousands of schemas cannot blow up the series count.
MAX_VIOLATION_LABELS = 100


class IngestMetrics:
    def __init__(self, metrics: Metrics):
        self.events = metrics.counter(
            "tally_ingest_events_total", "Events received, by outcome and rejection code.", ["outcome", "code"]
        )
        self.batch_size = metrics.histogram(
            "tally_ingest_batch_size", "Events per ingest request.", [], BATCH_SIZE_BUCKETS
        )
        self.replays = metrics.counter(
            "tally_ingest_idempotent_replays_total", "Responses replayed for a repeated Idempotency-Key.", []
        )
        self.duration = metrics.histogram(
            "tally_ingest_duration_seconds", "Time to validate and store one ingest request.", [], DURATION_BUCKETS
        )
        self.violations = metrics.counter(
            "tally_schema_violations_total",
            f"Track events that broke their tracking-plan schema, by event name (the first "
            f"{MAX_VIOLATION_LABELS} names a process sees; then other) and mode.",
            ["event", "mode"],
        )
        self._violation_labels: set[str] = set()

    def violation(self, event: str, mode: str) -> None:
        if event not in self._violation_labels:
            if len(self._violation_labels) >= MAX_VIOLATION_LABELS:
                event = "other"
            else:
                self._violation_labels.add(event)
        self.violations.labels(event, mode).inc()


@dataclass(frozen=True, slots=True)
class IngestServices:
    """What an ingest request needs besides its principal and body; one per process."""

    pool: AsyncConnectionPool
    settings: Settings
    plan: TrackingPlan
    metrics: IngestMetrics
    admission: Admission
    slots: StatementSlots
    projects: ProjectSettings
    suppressions: Suppressions


def ingest_services(
    settings: Settings, pool: AsyncConnectionPool, metrics: Metrics, projects: ProjectSettings, suppressions: Suppressions,
) -> IngestServices:
    return IngestServices(
        pool=pool,
        settings=settings,
        projects=projects,
        suppressions=suppressions,
        plan=TrackingPlan(),
        metrics=IngestMetrics(metrics),
        admission=Admission(settings.max_inflight_requests),
        slots=StatementSlots(settings.ingest_writers, settings.db_pool_timeout),
    )


class WireFormat(Protocol):
    """A vendor's wire format: a module such as ingest/segment.py. Every format hands its events,
    Segment-shaped, to the same checks and the same statement; only decoding and answers differ."""

    NAME: str

    def parse(self, body: bytes, media_type: str | None) -> Any: ...

    def credential(self, payload: Any) -> object: ...

    def envelope(self, payload: Any, kind: str | None, max_batch_events: int) -> Envelope: ...

    def answer(self, outcome: Outcome, envelope: Envelope) -> tuple[int, bytes]: ...

    def problem(self, error: AppError) -> tuple[int, bytes] | None: ...


@dataclass(frozen=True, slots=True)
class IngestRequest:
    body: bytes  # decompressed
    media_type: str | None  # of the body, without parameters
    format: WireFormat
    kind: str | None  # the event type of a single-call path (/v1/track...); None for a batch
    path: str
    idempotency_key: str | None
    # The principal, from the request's credentials and the one the body carries (None if
    # none): browser SDKs may send the key in the body only (shared.auth.write_key_authorizer).
    authorize: Callable[[object], Principal]


@dataclass(frozen=True, slots=True)
class IngestAnswer:
    status: int
    body: bytes  # JSON, as the response carries it
    replayed: bool = False


@dataclass(slots=True)
class Checked:
    rows: list[Row]  # to store, first occurrence of each messageId
    errors: list[dict]  # per-event rejections
    duplicates: int  # repeats of a messageId within the batch
    violations: list[tuple[str, str]]  # (event name, mode) of each event that broke its schema


def check(events: list, kind: str | None, ctx: BatchContext) -> Checked:
    """Every event checked on its own. The first occurrence of an id wins."""
    rows: list[Row] = []
    errors: list[dict] = []
    violations: list[tuple[str, str]] = []
    seen: set[str] = set()
    duplicates = 0
    for index, raw in enumerate(events):
        try:
            row = to_row(raw, kind, ctx)
        except Rejected as rejection:
            if isinstance(rejection, SchemaViolation):
                violations.append((rejection.event, "enforce"))
            message_id = raw.get("messageId") if isinstance(raw, dict) else None
            errors.append({
                "index": index,
                "messageId": message_id if isinstance(message_id, str) and is_unicode(message_id) else None,
                "code": rejection.code,
                "detail": rejection.detail,
            })
            continue
        if row.flagged is not None:
            violations.append((row.flagged, "flag"))
        if row.message_id in seen:
            duplicates += 1
            continue
        seen.add(row.message_id)
        rows.append(row)
    return Checked(rows, errors, duplicates, violations)


async def insert_rows(
    conn: AsyncConnection,
    project: str,
    rows: list[Row],
    sent_at: datetime | None,
    received_at: datetime,
    citus: bool = False,
) -> int:
    """Store rows not stored before with their count increments; returns how many were new."""
    if not rows:
        return 0
    rows = sorted(rows, key=lambda r: r.message_id)  # lock order, see sql.STORE_EVENTS
    params = {
        "project": project,
        "sent_at": sent_at,
        "received_at": received_at,
        "rows": (b"[" + b",".join(r.encoded for r in rows) + b"]").decode(),
    }
    if not citus:
        cur = await conn.execute(sql.INSERT_EVENTS, params)
        return (await cur.fetchone())[0]
    # Within the caller's transaction (an Idempotency-Key's), else in one of its own.
    async with contextlib.nullcontext() if conn.info.transaction_status != IDLE else conn.transaction():
        inserted = await (await conn.execute(sql.STORE_EVENTS, params)).fetchall()
        if inserted:
            events, stamps = zip(*inserted)
            await conn.execute(APPEND_COUNTS, {"project": project, "events": list(events), "ts": list(stamps)})
    return len(inserted)


async def ingest(services: IngestServices, request: IngestRequest) -> IngestAnswer:
    started = time.perf_counter()
    settings = services.settings
    if not (services.plan.loaded and services.projects.loaded and services.suppressions.loaded):
        raise DatabaseUnavailable("the tracking plan, project settings or suppressions are not loaded yet")
    received_at = datetime.now(timezone.utc)
    wire = request.format
    payload = wire.parse(request.body, request.media_type)
    principal = request.authorize(wire.credential(payload))
    envelope = wire.envelope(payload, request.kind, settings.max_batch_events)
    ctx = BatchContext(
        received_at=received_at,
        sent_at=envelope.sent_at,
        skew_threshold=timedelta(seconds=settings.clock_skew_threshold_seconds),
        future_limit=received_at + timedelta(seconds=settings.future_tolerance_seconds),
        max_event_bytes=settings.max_event_bytes,
        batch_context=envelope.context,
        rules=services.plan.rules_for(principal.project),
        retained_from=services.projects.retained_from(principal.project, received_at),
        suppressed=services.suppressions.ids_for(principal.project),
    )
    checked = check(envelope.events, envelope.kind, ctx)
    project = principal.project
    key = request.idempotency_key

    async with services.slots.turn(), services.pool.connection() as conn:
        if key is None:
            accepted = await insert_rows(conn, project, checked.rows, envelope.sent_at, received_at, settings.citus)
            answer = IngestAnswer(*wire.answer(_outcome(accepted, checked), envelope))
        else:
            print_ = idempotency.fingerprint(request.path, request.body)
            async with conn.transaction():
                stored = await idempotency.claim(conn, project, key, print_, settings.idempotency_ttl_seconds)
                if stored is not None:
                    services.metrics.replays.inc()
                    return IngestAnswer(*stored, replayed=True)
                accepted = await insert_rows(conn, project, checked.rows, envelope.sent_at, received_at, settings.citus)
                answer = IngestAnswer(*wire.answer(_outcome(accepted, checked), envelope))
                if answer.status == 200:
                    await idempotency.store(conn, project, key, print_, answer.body)
    _observe(services.metrics, len(envelope.events), accepted, checked, started)
    return answer


def _duplicates(accepted: int, checked: Checked) -> int:
    # Rows sent to the statement but not inserted were stored before; repeats within the batch
    # never reached it.
    return len(checked.rows) - accepted + checked.duplicates


def _outcome(accepted: int, checked: Checked) -> Outcome:
    return Outcome(accepted=accepted, duplicates=_duplicates(accepted, checked), errors=checked.errors)


def _observe(metrics: IngestMetrics, total: int, accepted: int, checked: Checked, started: float) -> None:
    metrics.batch_size.observe(total)
    if accepted:
        metrics.events.labels("accepted", "").inc(accepted)
    if duplicates := _duplicates(accepted, checked):
        metrics.events.labels("duplicate", "").inc(duplicates)
    for error in checked.errors:
        metrics.events.labels("rejected", error["code"]).inc()
    for event, mode in checked.violations:
        metrics.violation(event, mode)
    metrics.duration.observe(time.perf_counter() - started)


async def purge_expired_keys(pool: AsyncConnectionPool, ttl_seconds: int) -> int:
    async with pool.connection() as conn:
        return await idempotency.purge_expired(conn, ttl_seconds)


async def purge_loop(pool: AsyncConnectionPool, ttl_seconds: int) -> None:
    """Keys are kept for the configured retention, then deleted (each worker runs this; it is idempotent)."""
    while True:
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
        try:
            await purge_expired_keys(pool, ttl_seconds)
        except Exception as exc:  # the database may be down; try again next round
            log.warning("idempotency key purge failed", extra={"error": type(exc).__name__})
