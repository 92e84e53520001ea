"""Per-request context as pure ASGI middleware: request id, access log, HTTP metrics, last-resort 500.

Pure ASGI (not BaseHTTPMiddleware) so the body stream is untouched and the cost per request
stays a few microseconds. It is the outermost layer the app adds, so it also turns any
exception that escaped every handler into a problem+json 500 that names nothing internal.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import AppError, problem_response
from shared.metrics import Metrics

log = logging.getLogger("tally.access")

# A client-supplied X-Request-ID is echoed only when it is a sane token.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def log_project(scope: Scope, project: str) -> None:
    """Name the request's project in its access-log line (the token itself is never logged)."""
    scope.setdefault("state", {})["project"] = project


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        supplied = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                supplied = value.decode("latin-1")
                break
        request_id = supplied if supplied and SANE_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self._record(scope, state, request_id, status, time.perf_counter() - start)

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif not message.get("more_body", False):
                # Counted before the last byte leaves: once a client holds the whole response, any
                # scrape it makes next (of any worker) already includes this request.
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not started:
                response = problem_response(
                    500, AppError.code, AppError.title,
                    "An unexpected error occurred; it has been logged with this request_id.",
                    request_id,
                )
                await response(scope, receive, send_with_id)
        finally:
            record()  # a response that never completed (client gone, error mid-stream)

    def _record(self, scope: Scope, state: dict, request_id: str, status: int, seconds: float) -> None:
        route = scope.get("route")
        # path_format is the template as OpenAPI shows it: "/v1/events/{message_id}", without the
        # ":path" converter. FastAPI puts the route as declared in its router into the scope, so a
        # prefix given to include_router would be missing here: routers carry their own prefix.
        template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
        # Each APIRouter tags its routes with its own name ("ingest", "query"); the rest is "ops".
        tags = getattr(route, "tags", None)
        router = tags[0] if tags else "ops"
        method = scope["method"]
        self.metrics.requests.labels(router, template, method, str(status)).inc()
        self.metrics.latency.labels(router, template, method).observe(seconds)
        log.info(
            "request",
            extra={
                "request_id": request_id, "method": method, "route": template, "status": status,
                "duration_ms": round(seconds * 1000, 3), "project": state.get("project"), "router": router,
            },
        )
