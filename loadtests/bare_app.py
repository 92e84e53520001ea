"""The issue's yardstick, not Tally: a bare FastAPI ingest app, for calibrating the benchmark.

Raw body, orjson, one `INSERT ... SELECT FROM unnest ... ON CONFLICT DO NOTHING RETURNING` per
request into the same `events` table. No authentication, validation, counts, metrics or
idempotency. `python -m loadtests.bench_ingest` serves it beside Tally and reports both, so the
cost of Tally's features is measured on the machine that runs the benchmark rather than assumed.

    BARE_DATABASE_URL=... uvicorn loadtests.bare_app:app --workers 2
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone

import orjson
from fastapi import FastAPI, Request, Response
from psycopg.types.json import Jsonb, set_json_dumps
from psycopg_pool import AsyncConnectionPool

INSERT = """
INSERT INTO events (project_id, message_id, type, event, user_id, anonymous_id, ts, received_at,
                    properties, context)
SELECT 'bare', m, t, e, u, a, ts, now(), p, c
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],
            %s::jsonb[], %s::jsonb[]) AS x(m, t, e, u, a, ts, p, c)
ON CONFLICT (project_id, message_id) DO NOTHING
RETURNING message_id
"""

set_json_dumps(orjson.dumps)  # psycopg's default is the stdlib json, several times slower
pool = AsyncConnectionPool(os.environ.get("BARE_DATABASE_URL", ""), min_size=2, max_size=4, open=False)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    await pool.open()
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
async def ready() -> dict:
    return {"ok": True}


@app.post("/v1/batch")
async def batch(request: Request) -> Response:
    # Sorted by id: two batches sharing ids then lock in one order (unsorted, they deadlock).
    events = sorted(orjson.loads(await request.body())["batch"], key=lambda e: e["messageId"])
    now = datetime.now(timezone.utc)
    columns = (
        [e["messageId"] for e in events],
        [e.get("type", "track") for e in events],
        [e.get("event") or "" for e in events],
        [e.get("userId") for e in events],
        [e.get("anonymousId") for e in events],
        [datetime.fromisoformat(e["timestamp"]) if "timestamp" in e else now for e in events],
        [Jsonb(e.get("properties")) for e in events],
        [Jsonb(e.get("context")) for e in events],
    )
    async with pool.connection() as conn:
        inserted = len(await (await conn.execute(INSERT, columns, binary=True)).fetchall())
    return Response(orjson.dumps({"success": True, "accepted": inserted}), media_type="application/json")
