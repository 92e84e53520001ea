"""Every non-2xx answer, ours and the framework's, is problem+json with a stable code and the request id;
a 500 names nothing internal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from shared.services import ServicesDep
from tally.app import create_app
from tests.factories import SECRET, auth_headers
from tests.helpers import make_settings

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id"}


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert PROBLEM_KEYS <= body.keys()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_path_is_404_problem(client):
    body = assert_problem(client.get("/v1/nothing-here"), 404, "not_found")
    assert "/v1/nothing-here" in body["detail"]


def test_wrong_method_is_405_problem_with_allow(client):
    response = client.get("/v1/batch")
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_unauthenticated_is_401_problem(client):
    assert_problem(client.post("/v1/batch", json={"batch": []}), 401, "invalid_token")


def test_missing_scope_is_403_problem(client, project):
    response = client.post("/v1/batch", json={"batch": []}, headers=auth_headers(project, "query"))
    assert_problem(response, 403, "insufficient_scope")


def test_oversized_body_is_413_problem(client, auth):
    body = b'{"batch": [' + b" " * (1024 * 1024) + b"]}"
    response = client.post("/v1/batch", content=body, headers={**auth, "Content-Type": "application/json"})
    assert_problem(response, 413, "payload_too_large")


def test_unsupported_content_type_is_415_problem(client, auth):
    response = client.post("/v1/batch", content=b"<batch/>", headers={**auth, "Content-Type": "application/xml"})
    assert_problem(response, 415, "unsupported_media_type")


LEAKY = "SELECT password FROM secrets WHERE token = 'hunter2'"


@pytest.fixture(scope="module")
def failing_client(database_url: str) -> Iterator[TestClient]:
    """The real app plus test-only routes that fail the ways a bug would."""
    app = create_app(make_settings(database_url))

    @app.get("/test/raise")
    async def raise_runtime_error() -> None:
        raise RuntimeError(f"{LEAKY} {SECRET}")

    @app.get("/test/bad-sql")
    async def bad_sql(services: ServicesDep) -> None:
        async with services.pool.connection() as conn:
            await conn.execute("SELECT secret_column FROM no_such_table_hunter2")

    @app.get("/test/validated")
    async def validated(limit: int) -> dict:
        return {"limit": limit}

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_request_validation_is_422_problem_naming_the_parameter(failing_client):
    body = assert_problem(failing_client.get("/test/validated?limit=many"), 422, "invalid_parameter")
    assert [e["location"] for e in body["errors"]] == ["query.limit"]


@pytest.mark.parametrize("path", ["/test/raise", "/test/bad-sql"])
def test_unhandled_exception_is_500_problem_naming_nothing_internal(failing_client, path):
    response = failing_client.get(path)
    body = assert_problem(response, 500, "internal_error")
    assert set(body) == PROBLEM_KEYS
    for leak in ("Traceback", "RuntimeError", "UndefinedTable", "hunter2", "SELECT", SECRET, ".py"):
        assert leak not in response.text


def test_database_unreachable_is_503_problem_with_retry_after():
    unreachable = "postgresql://postgres@127.0.0.1:1/tally"
    app = create_app(make_settings(unreachable, db_pool_timeout=0.2))

    @app.get("/test/needs-db")
    async def needs_db(services: ServicesDep) -> None:
        async with services.pool.connection() as conn:
            await conn.execute("SELECT 1")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/test/needs-db")
    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"
