"""`create_app(settings)`: the one place settings, pool, metrics, middleware and routers meet."""

from __future__ import annotations

import asyncio
import gc
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from shared.auth import TokenVerifier
from shared.db import create_pool
from shared.errors import Problem, install_error_handlers
from shared.logging import configure_logging
from shared.metrics import Metrics
from shared.middleware import RequestContext
from shared.reload import reload_loop
from shared.revocation import RevokedTokens
from shared.settings import Settings
from tally import admin, ops
from tally.migrate import head_revision

log = logging.getLogger("tally")

POOL_SAMPLE_SECONDS = 1.0


def create_app(settings: Settings) -> FastAPI:
    if settings.database_url is None:
        raise ValueError("TALLY_DATABASE_URL is not set")
    verifier = TokenVerifier(settings)
    metrics = Metrics()
    pool = create_pool(settings)
    revoked = RevokedTokens()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # wait=False: the process comes up even while the database is down; /readyz says so.
        await pool.open(wait=False)
        # Load the revocation list before serving; if the database is down, authenticated
        # requests are 503 until the refresh task manages to load it.
        with contextlib.suppress(Exception):
            await revoked.refresh(pool, timeout=settings.db_pool_timeout)
        tasks = [asyncio.create_task(_sample_pool(pool, metrics)), asyncio.create_task(reload_loop("revocation list", revoked, pool))]
        if settings.role in ("all", "ingest"):
            from ingest.service import fold_loop, purge_loop

            # Like the revocation list: loaded before serving, ingest is 503 until it is.
            with contextlib.suppress(Exception):
                await app.state.tracking_plan.refresh(pool, timeout=settings.db_pool_timeout)
            tasks.append(asyncio.create_task(reload_loop("tracking plan", app.state.tracking_plan, pool)))

            tasks.append(asyncio.create_task(purge_loop(pool, settings.idempotency_ttl_seconds)))
            tasks.append(asyncio.create_task(fold_loop(pool, app.state.ingest_metrics)))
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
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.metrics = metrics
    app.state.pool = pool
    app.state.revoked_tokens = revoked
    app.state.head_revision = head_revision()

    install_error_handlers(app)
    app.include_router(ops.router)
    documented: list = [Problem]
    if settings.role in ("all", "ingest"):
        from ingest.admission import Admission, Writers
        from ingest.plan import TrackingPlan
        from ingest.router import DOCUMENTED_MODELS
        from ingest.router import router as ingest_router
        from ingest.service import IngestMetrics

        app.state.ingest_metrics = IngestMetrics(metrics)
        app.state.admission = Admission(settings.max_inflight_requests)
        app.state.writers = Writers(settings.ingest_writers, settings.db_pool_timeout)
        app.state.tracking_plan = TrackingPlan()
        app.include_router(ingest_router)
        # Revocation is a write; it is served with ingest. Every role checks revocations.
        app.include_router(admin.router)
        documented.extend((*DOCUMENTED_MODELS, admin.RevocationIn))
        # The tracking plan is a write, and enforced where events arrive: served with ingest too.
        from plans.router import PLAN_MODELS
        from plans.router import router as plans_router

        app.include_router(plans_router)
        documented.extend(PLAN_MODELS)
    if settings.role in ("all", "query"):
        from query.router import router as query_router
        from query.service import QueryMetrics

        app.state.query_metrics = QueryMetrics(metrics)
        app.include_router(query_router)
    # Query listings and the schema list (served with ingest) page with signed cursors: every
    # role needs the key. ValueError when there is no secret to sign with.
    from shared.cursor import signing_key

    app.state.cursor_key = signing_key(settings)
    app.add_middleware(RequestContext, metrics=metrics)
    _document_models(app, documented)
    return app


def _document_models(app: FastAPI, models: list) -> None:
    """Add models that document raw-read bodies to the OpenAPI components."""
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = base()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(spec.pop("$defs", {}))
                components[model.__name__] = spec
        return app.openapi_schema

    app.openapi = openapi


async def _sample_pool(pool, metrics: Metrics) -> None:
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
