"""Real-Postgres fixtures.

The server is TALLY_TEST_DATABASE_URL when set (CI: the machine's Postgres), else the embedded
pgserver under ./.tally. The suite creates its own databases on that server, migrates them with
alembic once, and isolates tests by giving each a fresh project id (tenancy isolates for free).
Tests that need a whole database of their own get one from `create_database`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from shared.settings import Settings
from tally.app import create_app
from tally.migrate import upgrade
from tests.factories import auth_headers
from tests.helpers import ROOT, make_settings, start_server, stop_server, with_database


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get("TALLY_TEST_DATABASE_URL")
    if url:
        return url
    from tally.embedded import embedded_database_url

    return embedded_database_url(ROOT / ".tally")


@pytest.fixture(scope="session")
def create_database(server_url: str) -> Iterator[Callable[..., str]]:
    """create_database(migrate=True) -> URL of a new, empty (or migrated) database, dropped at the end."""
    created: list[str] = []
    tag = f"{os.getpid()}"

    def create(migrate: bool = True, name: str | None = None) -> str:
        name = name or f"tally_test_{tag}_{len(created)}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = with_database(server_url, name)
        if migrate:
            upgrade(Settings(database_url=url).sqlalchemy_url)
        return url

    yield create
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(create_database: Callable[..., str]) -> str:
    return create_database()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app in-process (ASGI), with its lifespan and pool, shared by the session."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A direct connection for asserting what is stored."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def project() -> str:
    return "p_" + uuid.uuid4().hex[:12]


@pytest.fixture
def auth(project: str) -> dict[str, str]:
    return auth_headers(project)


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[str]:
    """A real `tally serve` process (uvicorn, uvloop, httptools) for tests that need real sockets."""
    proc, base = start_server(database_url)
    yield base
    stop_server(proc)
