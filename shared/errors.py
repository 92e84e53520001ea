"""One error model: every non-2xx answer is RFC 9457 application/problem+json.

Services raise an `AppError` subclass; `install_error_handlers` maps those, the framework's own
errors (404, 405, request validation) and database unavailability to problem documents with a
stable `code` and the `request_id`. Routers contain no `try`.
"""

from __future__ import annotations

import logging
from enum import StrEnum
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
    """A whole-request failure: nothing of the request is stored. Raise a subclass below."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra


class Retryable(AppError):
    """503 with Retry-After: SDKs retry these with backoff, and nothing of the request was stored."""

    status = 503

    def __init__(self, detail: str | None = None, **extra: Any):
        super().__init__(detail, headers={"Retry-After": "1"}, **extra)


# The catalog: every problem code Tally answers with, by status. A code is the class's literal,
# so a grep for a documented code lands here, and the README's table is checked against it
# (tests/test_error_catalog.py).

# 400
class BadRequest(AppError):
    status, code, title = 400, "bad_request", "Bad request"


class InvalidJSON(AppError):
    status, code, title = 400, "invalid_json", "Body is not valid JSON"


class IncompleteBody(AppError):
    status, code, title = 400, "incomplete_body", "Body ended before its Content-Length"


class InvalidIdempotencyKey(AppError):
    status, code, title = 400, "invalid_idempotency_key", "Bad request"


class InvalidCursor(AppError):
    status, code, title = 400, "invalid_cursor", "Invalid cursor"


# 401, 403
class Unauthorized(AppError):
    status, code, title = 401, "invalid_token", "Missing or invalid credentials"

    def __init__(self, detail: str | None = None, *, missing: bool = False, **extra: Any):
        # RFC 6750 section 3: tell the client which scheme, and why unless it sent no credentials
        # at all (then the challenge carries no error code).
        challenge = 'Bearer realm="tally"' if missing else 'Bearer realm="tally", error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, **extra)


class Forbidden(AppError):
    status, code, title = 403, "insufficient_scope", "Token lacks the scope this endpoint needs"


class OriginNotAllowed(AppError):
    status, code, title = 403, "origin_not_allowed", "Token may not be used from this page"


# 404
class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class SchemaNotFound(AppError):
    status, code, title = 404, "schema_not_found", "No schema for this event"


# 409
class IdempotencyKeyInUse(AppError):
    status, code, title = 409, "idempotency_key_in_use", "A request with this Idempotency-Key is still in flight"


class SchemaExists(AppError):
    status, code, title = 409, "schema_exists", "This event already has a schema"


# 412, 413, 415
class PreconditionFailed(AppError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


# 422
class InvalidParameter(AppError):
    status, code, title = 422, "invalid_parameter", "Invalid parameter"

    @classmethod
    def of(cls, parameter: str, message: str, where: str = "query") -> InvalidParameter:
        """One invalid value, named as the framework's validation names it (query.limit)."""
        return cls(f"{parameter}: {message}", errors=[{"location": f"{where}.{parameter}", "message": message}])


class IdempotencyKeyMismatch(AppError):
    status, code, title = 422, "idempotency_key_mismatch", "Idempotency-Key reused with a different request"


class InvalidSchema(AppError):
    status, code, title = 422, "invalid_schema", "Not a usable JSON Schema (draft 2020-12)"


class SchemaTooLarge(AppError):
    status, code, title = 422, "schema_too_large", "Schema too large"


class EventMismatch(AppError):
    status, code, title = 422, "event_mismatch", "The body names another event than the path"


# 503
class Overloaded(Retryable):
    code, title = "overloaded", "Too many requests in progress, retry later"


class DatabaseUnavailable(Retryable):
    code, title = "database_unavailable", "Database unavailable, retry later"


class SchemaBehind(Retryable):
    code, title = "schema_behind", "Database schema behind the code"


class Rejection(StrEnum):
    """Per-event codes: the event alone is rejected (200, an entry in `errors`), the rest of its
    batch is stored. ingest/checks.py raises each of them."""

    INVALID_EVENT = "invalid_event"
    MISSING_MESSAGE_ID = "missing_message_id"
    INVALID_MESSAGE_ID = "invalid_message_id"
    INVALID_TYPE = "invalid_type"
    MISSING_IDENTITY = "missing_identity"
    INVALID_USER_ID = "invalid_user_id"
    INVALID_ANONYMOUS_ID = "invalid_anonymous_id"
    MISSING_EVENT_NAME = "missing_event_name"
    INVALID_EVENT_NAME = "invalid_event_name"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    INVALID_PROPERTIES = "invalid_properties"
    INVALID_CONTEXT = "invalid_context"
    INVALID_TRAITS = "invalid_traits"
    UNSTORABLE_VALUE = "unstorable_value"
    EVENT_TOO_LARGE = "event_too_large"
    SCHEMA_VIOLATION = "schema_violation"
    OUTSIDE_RETENTION = "outside_retention"
    USER_SUPPRESSED = "user_suppressed"


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


# The framework's own answers (no route, wrong method) in the same catalog's words.
HTTP_CODES = {
    400: (BadRequest.code, BadRequest.title),
    404: (NotFound.code, NotFound.title),
    405: ("method_not_allowed", "Method not allowed"),
}


PROBED_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _from_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    code, title = HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
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
        InvalidParameter.status, InvalidParameter.code, InvalidParameter.title, f"Invalid value for {names}",
        _request_id(request), extra={"errors": errors},
    )


def _from_database_error(request: Request, exc: Exception) -> Response:
    # A lost connection, a pool wait past its timeout, or a cancelled statement: the request
    # may be retried. Its transaction did not commit, so nothing of it is half-stored.
    log.warning("database unavailable: %s", type(exc).__name__)
    return _from_app_error(request, DatabaseUnavailable())


# What the database raises when it is unreachable or too slow: answered as DatabaseUnavailable.
# 25P03 (the server ended a session left idle in a transaction) is filed by psycopg under
# InternalError, but for the client it is the same retryable outage.
DATABASE_ERRORS = (psycopg_pool.PoolTimeout, psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _from_app_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _from_http_exception)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _from_validation_error)  # type: ignore[arg-type]
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, _from_database_error)
