"""One error model: every non-2xx answer is RFC 9457 application/problem+json.

Services raise an `AppError` subclass; `install_error_handlers` maps those, the framework's own
errors (404, 405, request validation) and database unavailability to problem documents with a
stable `code` and the `request_id`. Routers contain no `try`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import psycopg
import psycopg.errors
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://tally.dev/problems/"

log = logging.getLogger("tally.errors")


class InvalidField(BaseModel):
    location: str = Field(description="Dotted path of the invalid value, e.g. query.limit or body.jti.")
    message: str


class Problem(BaseModel):
    """The body of every non-2xx answer (RFC 9457), documented under application/problem+json."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable code, the last segment of `type`.")
    request_id: str | None
    errors: list[InvalidField] | None = Field(None, description="With invalid_parameter: each invalid value.")
    model_config = {"extra": "allow"}


def problem_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its reason and the Problem body."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {"description": why, "content": {PROBLEM_JSON: {"schema": schema}}}
        for status, why in descriptions.items()
    }


class AppError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra


class BadRequest(AppError):
    status, code, title = 400, "bad_request", "Bad request"


class InvalidJSON(AppError):
    status, code, title = 400, "invalid_json", "Body is not valid JSON"


class InvalidParameter(AppError):
    status, code, title = 422, "invalid_parameter", "Invalid parameter"


class Unauthorized(AppError):
    status, code, title = 401, "invalid_token", "Missing or invalid credentials"

    def __init__(self, detail: str | None = None, *, missing: bool = False, **extra: Any):
        # RFC 6750 section 3: tell the client which scheme, and why unless it sent no credentials
        # at all (then the challenge carries no error code).
        challenge = 'Bearer realm="tally"' if missing else 'Bearer realm="tally", error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, **extra)


class Forbidden(AppError):
    status, code, title = 403, "insufficient_scope", "Token lacks the scope this endpoint needs"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PreconditionFailed(AppError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class Unprocessable(AppError):
    status, code, title = 422, "unprocessable", "Unprocessable content"


class Overloaded(AppError):
    status, code, title = 503, "overloaded", "Too many requests in progress, retry later"

    def __init__(self, detail: str | None = None, **extra: Any):
        super().__init__(detail, headers={"Retry-After": "1"}, **extra)


class DatabaseUnavailable(AppError):
    status, code, title = 503, "database_unavailable", "Database unavailable, retry later"

    def __init__(self, detail: str | None = None, **extra: Any):
        super().__init__(detail, headers={"Retry-After": "1"}, **extra)


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    request_id: str | None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _from_app_error(request: Request, exc: AppError) -> Response:
    return problem_response(
        exc.status, exc.code, exc.title, exc.detail, _request_id(request), exc.headers, exc.extra
    )


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("invalid_token", "Missing or invalid credentials"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


PROBED_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _from_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route for {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and detail == "Method Not Allowed":
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
    return problem_response(exc.status_code, code, title, detail, _request_id(request), headers)


def _allowed_methods(request: Request) -> str:
    # Starlette answers 405 with the methods of the first route whose path matched; a path
    # served by one route per method (GET, PUT, DELETE /v1/schemas/{event}) allows them all.
    # So ask every route whether it would take this path with each method.
    probe = {"type": "http", "path": request.scope["path"], "root_path": request.scope.get("root_path", "")}
    return ", ".join(
        method for method in PROBED_METHODS
        if any(route.matches({**probe, "method": method})[0] is Match.FULL for route in request.app.router.routes)
    )


def _from_validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = [
        {"location": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    names = ", ".join(e["location"] for e in errors) or "request"
    return problem_response(
        422, "invalid_parameter", "Invalid parameter", f"Invalid value for {names}",
        _request_id(request), extra={"errors": errors},
    )


def _from_database_error(request: Request, exc: Exception) -> Response:
    # A lost connection, a pool wait past its timeout, or a cancelled statement: the request
    # may be retried. Its transaction did not commit, so nothing of it is half-stored.
    log.warning("database unavailable: %s", type(exc).__name__)
    return _from_app_error(request, DatabaseUnavailable())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _from_app_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _from_http_exception)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _from_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(psycopg_pool.PoolTimeout, _from_database_error)
    app.add_exception_handler(psycopg.OperationalError, _from_database_error)
    # 25P03: the server ended a session left idle in a transaction; psycopg files it under
    # InternalError, but for the client it is the same retryable outage.
    app.add_exception_handler(psycopg.errors.IdleInTransactionSessionTimeout, _from_database_error)
