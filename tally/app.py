"""`create_app(settings)`: the one place settings, pool, metrics, middleware and routers meet."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from ingest import compat
from ingest import router as ingest_router
from ingest.schemas import EventIn, batch_in
from ingest.service import IngestServices, ingest_services, purge_loop
from lifecycle import router as lifecycle_router
from lifecycle.service import LifecycleMetrics, LifecycleServices, erasure_loop, retention_loop
from plans import router as plans_router
from query import router as query_router
from query.service import QueryServices
from shared import counts
from shared.cors import CORS, paths_of
from shared.auth import TokenVerifier
from shared.cursor import signing_key
from shared.db import create_pool
from shared.errors import Problem, install_error_handlers
from shared.logging import configure_logging
from shared.metrics import Metrics
from shared.projects import ProjectSettings
from shared.middleware import RequestContext
from shared.openapi import document_models
from shared.reload import reload_loop
from shared.revocation import RevokedTokens
from shared.services import Services
from shared.settings import Settings
from shared.suppressions import Suppressions
from tally import admin, ops
from tally.migrate import head_revision

log = logging.getLogger("tally")

POOL_SAMPLE_SECONDS = 1.0


def create_app(settings: Settings) -> FastAPI:
    if settings.database_url is None:
        raise ValueError("TALLY_DATABASE_URL is not set")
    writes = settings.role in ("all", "ingest")
    reads = settings.role in ("all", "query")
    metrics = Metrics()
    pool = create_pool(settings)
    # Per-process copies every role reads (project settings) or ingest and the lifecycle share
    # (suppressions): one object each, so a change this worker commits holds here at once.
    projects = ProjectSettings(settings.retention_days)
    suppressions = Suppressions()
    ingest = ingest_services(settings, pool, metrics, projects, suppressions) if writes else None
    lifecycle = (
        LifecycleServices(pool, settings, projects, suppressions, LifecycleMetrics(metrics)) if writes else None
    )
    query = QueryServices.create(pool, metrics, projects) if reads else None
    # The count folder runs where events are written; query reads what it has not folded yet.
    fold_metrics = counts.FoldMetrics(metrics) if writes else None
    services = Services(
        settings=settings,
        pool=pool,
        verifier=TokenVerifier(settings),
        revoked=RevokedTokens(),
        metrics=metrics,
        # Query listings and the schema list (served with ingest) page with signed cursors:
        # every role needs the key. ValueError when there is no secret to sign with.
        cursor_key=signing_key(settings),
        head_revision=head_revision(),
        roles=tuple(part for part in (ingest, lifecycle, query) if part is not None),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # wait=False: the process comes up even while the database is down; /readyz says so.
        await pool.open(wait=False)
        jobs = await _background(services, projects, ingest, lifecycle, fold_metrics)
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await pool.close()
            metrics.close()

    app = FastAPI(
        title="Tally",
        version="0.1.0",
        summary="Analytics event ingestion and aggregates",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(ops.router)
    documented: list = [Problem]
    public_routes = []
    if writes:
        app.include_router(ingest_router.router)
        app.include_router(compat.router)
        public_routes += [*ingest_router.router.routes, *compat.router.routes]
        documented += [batch_in(settings.max_batch_events), EventIn]
        # Revocation and the tracking plan are writes, served with ingest; the plan is also
        # enforced where events arrive. Every role checks revocations.
        app.include_router(admin.router)
        documented += admin.DOCUMENTED_MODELS
        app.include_router(plans_router.router)
        documented += plans_router.DOCUMENTED_MODELS
        app.include_router(lifecycle_router.router)
        documented += lifecycle_router.DOCUMENTED_MODELS
    if reads:
        app.include_router(query_router.router)
    app.add_middleware(RequestContext, metrics=metrics)
    # Outermost, so that every answer, a last-resort 500 included, carries the CORS headers.
    app.add_middleware(CORS, public=paths_of(public_routes), origins=settings.cors_origins)
    document_models(app, documented)
    return app


async def _background(
    services: Services,
    projects: ProjectSettings,
    ingest: IngestServices | None,
    lifecycle: LifecycleServices | None,
    fold_metrics: counts.FoldMetrics | None,
) -> list[Coroutine[Any, Any, None]]:
    """Load the per-process copies once (until they are, the requests that need them are 503;
    if the database is down, their reload loops keep trying), then the loops to run."""
    pool, settings = services.pool, services.settings
    copies: list[tuple[str, Any]] = [("revocation list", services.revoked), ("project settings", projects)]
    if ingest is not None:
        copies += [("tracking plan", ingest.plan), ("suppressions", ingest.suppressions)]
    for _, copy in copies:
        with contextlib.suppress(Exception):
            await copy.refresh(pool, timeout=settings.db_pool_timeout)
    jobs = [_sample_pool(pool, services.metrics), *(reload_loop(name, copy, pool) for name, copy in copies)]
    if fold_metrics is not None and lifecycle is not None:
        jobs += [
            purge_loop(pool, settings.idempotency_ttl_seconds),
            counts.fold_loop(pool, fold_metrics),
            retention_loop(lifecycle),
            erasure_loop(lifecycle),
        ]
    return jobs


async def _sample_pool(pool: AsyncConnectionPool, metrics: Metrics) -> None:
    while True:
        stats = pool.get_stats()
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        metrics.pool_in_use.set(size - idle)
        metrics.pool_idle.set(idle)
        metrics.pool_waiting.set(stats.get("requests_waiting", 0))
        await asyncio.sleep(POOL_SAMPLE_SECONDS)


def create_app_from_env() -> FastAPI:
    """The uvicorn factory for `tally serve`: each worker reads the environment the CLI prepared."""
    settings = Settings()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # Everything built so far lives as long as the process: keep it out of the collector's
    # scans, so full collections under load walk only what requests allocate.
    gc.collect()
    gc.freeze()
    return app
