"""HTTP only: what browser SDKs load and post beside their events, so they run unchanged.

- Their settings: Segment's `GET /v1/projects/{writeKey}/settings` (what its CDN serves) and
  RudderStack's `GET /sourceConfig/`, answered with the least that makes each SDK's `load()`
  send its events to this server, and only for a valid ingest key.
- Their own telemetry: Segment's `POST /v1/m` and RudderStack's `POST /rsaMetrics`, answered
  204 and dropped (their SDKs retry or log anything else).

None of these is in the OpenAPI document: they exist for the SDKs, not for callers.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from shared.auth import authenticate, log_project, permit, write_key_authorizer
from shared.body import read_raw
from shared.services import services_of

router = APIRouter(tags=["ingest"], include_in_schema=False)

# Telemetry bodies are small; a larger one is refused like any body over the limit.
MAX_TELEMETRY_BYTES = 64 * 1024


def _json(body: dict, status: int = 200) -> Response:
    # The settings carry the caller's own key (Segment's SDK sends what `apiKey` says): never
    # kept by a cache in between.
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@router.get("/v1/projects/{write_key}/settings")
async def segment_settings(request: Request, write_key: str) -> Response:
    """Segment's CDN settings for a write key: deliver to this server's /v1 paths."""
    principal = authenticate(services_of(request), write_key)
    log_project(request.scope, principal.project)
    permit(principal, "ingest", request.headers.get("origin"))
    host = request.headers.get("host") or request.url.netloc
    return _json({
        "integrations": {
            "Segment.io": {"apiKey": write_key, "apiHost": f"{host}/v1", "protocol": request.url.scheme},
        },
        "plan": {"track": {"__default": {"enabled": True}}},
        # No telemetry of the SDK's own: /v1/m would drop it anyway.
        "metrics": {"sampleRate": 0},
    })


# HEAD too: the SDK probes this URL with HEAD to tell whether an ad blocker is in the way.
@router.api_route("/sourceConfig/", methods=["GET", "HEAD"])
async def rudderstack_source_config(request: Request) -> Response:
    """RudderStack's source configuration: an enabled source with no device-mode destinations
    (every event goes to the data plane: this server). The key comes as its SDK sends it:
    Authorization Basic, or ?writeKey=."""
    principal = write_key_authorizer(request, "ingest")(None)
    return _json({
        "isHosted": False,
        "source": {
            "id": principal.project, "name": principal.project, "workspaceId": principal.project,
            "enabled": True, "config": {}, "destinations": [],
        },
    })


@router.post("/v1/m", status_code=204)
@router.post("/rsaMetrics", status_code=204)
async def sdk_telemetry(request: Request) -> Response:
    await read_raw(request, MAX_TELEMETRY_BYTES)
    return Response(status_code=204)
