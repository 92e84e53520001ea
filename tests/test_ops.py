"""Liveness, readiness (database answers and schema at head) and which routers each --role mounts."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from shared.settings import Settings
from tally.app import create_app
from tally.migrate import downgrade, head_revision
from tests.helpers import make_settings
from tests.test_errors import assert_problem


def readyz(database_url: str, **overrides):
    with TestClient(create_app(make_settings(database_url, **overrides)), raise_server_exceptions=False) as client:
        return client.get("/readyz")


def test_healthz_touches_nothing_external():
    # A database URL nothing listens on: liveness must not care.
    app = create_app(make_settings("postgresql://postgres@127.0.0.1:1/nothing"))
    with TestClient(app) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_at_the_schema_head(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "schema": head_revision()}


def test_readyz_is_503_schema_behind_on_an_unmigrated_database(create_database):
    response = readyz(create_database(migrate=False))
    body = assert_problem(response, 503, "schema_behind")
    assert "tally migrate" in body["detail"]


def test_readyz_is_503_schema_behind_after_a_downgrade(create_database):
    url = create_database()
    assert readyz(url).status_code == 200
    downgrade(Settings(_env_file=None, database_url=url).sqlalchemy_url, "base")
    body = assert_problem(readyz(url), 503, "schema_behind")
    assert head_revision() in body["detail"]


def test_readyz_is_503_database_unavailable_when_unreachable():
    response = readyz("postgresql://postgres@127.0.0.1:1/nothing")
    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"


def documented_paths(database_url: str, role: str) -> set[str]:
    """The API paths an app of this role serves, as mounted (ops routes are not in the schema)."""
    return set(create_app(make_settings(database_url, role=role)).openapi()["paths"])


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


def assert_ops_mounted(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.fixture(scope="module")
def role_paths(database_url: str) -> dict[str, set[str]]:
    return {role: documented_paths(database_url, role) for role in ("all", "ingest", "query")}


def test_role_all_mounts_both_routers(role_paths):
    assert "/v1/batch" in role_paths["ingest"]
    assert role_paths["all"] == role_paths["ingest"] | role_paths["query"]


def test_role_query_mounts_no_ingest_route(database_url, role_paths):
    assert not role_paths["query"] & role_paths["ingest"]
    with TestClient(create_app(make_settings(database_url, role="query")), raise_server_exceptions=False) as client:
        for template in role_paths["ingest"]:
            assert_problem(client.post(concrete(template), json={"batch": []}), 404, "not_found")
        assert_ops_mounted(client)


def test_role_ingest_mounts_no_query_route(database_url, role_paths):
    with TestClient(create_app(make_settings(database_url, role="ingest")), raise_server_exceptions=False) as client:
        for template in role_paths["query"]:
            assert_problem(client.get(concrete(template)), 404, "not_found")
        assert_ops_mounted(client)
