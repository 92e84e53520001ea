"""Liveness, readiness and the Prometheus scrape: mounted whatever the role."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from shared.errors import DatabaseUnavailable, SchemaBehind
from shared.services import ServicesDep

router = APIRouter()

READY_BUDGET_SECONDS = 1.0


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    # Liveness touches nothing external: a database outage must not get the process restarted.
    return _ok({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(services: ServicesDep) -> Response:
    try:
        revision = await asyncio.wait_for(_schema_revision(services.pool), READY_BUDGET_SECONDS)
    except Exception:  # any failure to answer within the budget means "not ready"
        raise DatabaseUnavailable("The database did not answer within 1 s.") from None
    if revision != services.head_revision:
        raise SchemaBehind(
            f"Database schema is at {revision or 'nothing'}, the code needs {services.head_revision}; run `tally migrate`."
        )
    return _ok({"status": "ready", "schema": revision})


async def _schema_revision(pool) -> str | None:
    async with pool.connection(timeout=READY_BUDGET_SECONDS) as conn:
        cur = await conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not (await cur.fetchone())[0]:
            return None
        cur = await conn.execute("SELECT version_num FROM alembic_version")
        row = await cur.fetchone()
        return row[0] if row else None


def _ok(body: dict) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
