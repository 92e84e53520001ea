"""Liveness, readiness and the Prometheus scrape: mounted whatever the role."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from shared.errors import problem_response

router = APIRouter()

READY_BUDGET_SECONDS = 1.0


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    # Liveness touches nothing external: a database outage must not get the process restarted.
    return _json({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    state = request.app.state
    try:
        revision = await asyncio.wait_for(_schema_revision(state.pool), READY_BUDGET_SECONDS)
    except Exception:  # any failure to answer within the budget means "not ready"
        return _not_ready(request, "database_unavailable", "The database did not answer within 1 s.")
    if revision != state.head_revision:
        return _not_ready(
            request, "schema_behind",
            f"Database schema is at {revision or 'nothing'}, the code needs {state.head_revision}; run `tally migrate`.",
        )
    return _json({"status": "ready", "schema": revision})


async def _schema_revision(pool) -> str | None:
    async with pool.connection(timeout=READY_BUDGET_SECONDS) as conn:
        cur = await conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not (await cur.fetchone())[0]:
            return None
        cur = await conn.execute("SELECT version_num FROM alembic_version")
        row = await cur.fetchone()
        return row[0] if row else None


def _not_ready(request: Request, code: str, detail: str) -> Response:
    return problem_response(
        503, code, "Not ready", detail, request.scope.get("state", {}).get("request_id"), {"Retry-After": "1"}
    )


def _json(body: dict) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
