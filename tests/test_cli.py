"""The `tally` command as a user runs it: a subprocess in an empty directory, configured by environment.

Every failure is exactly one line on stderr starting `tally: error:`, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jwt
import psycopg
import pytest

from tally.cli import build_parser
from tally.migrate import head_revision
from tests.factories import SECRET
from tests.helpers import ROOT

UNREACHABLE = "postgresql://postgres:hunter2@127.0.0.1:1/tally"


def tally(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TALLY_", "PROMETHEUS_"))}
    return subprocess.run(
        [sys.executable, "-m", "tally.cli", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tally: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [["migrate"], ["serve"], ["token", "--project", "p", "--scope", "ingest"]],
    ids=["migrate", "serve", "token"],
)
def test_a_non_postgres_url_is_one_line(tmp_path, args):
    result = tally(tmp_path, *args, env={"TALLY_DATABASE_URL": "mysql://x", "TALLY_JWT_SECRET": SECRET})
    assert_one_line_error(result, "TALLY_DATABASE_URL", "postgresql://")


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_an_unreachable_database_is_one_line_without_the_password(tmp_path, command):
    result = tally(tmp_path, command, env={"TALLY_DATABASE_URL": UNREACHABLE, "TALLY_JWT_SECRET": SECRET})
    line = assert_one_line_error(result, "cannot reach database at 127.0.0.1:1/tally", "Connection refused")
    assert "hunter2" not in line


def test_serve_with_an_external_database_and_no_key_refuses_to_start(tmp_path, database_url):
    result = tally(tmp_path, "serve", env={"TALLY_DATABASE_URL": database_url})
    assert_one_line_error(result, "refusing to start", "TALLY_JWT_SECRET", "TALLY_JWT_PUBLIC_KEYS")


def test_serve_with_an_unusable_public_key_file_refuses_to_start(tmp_path, database_url):
    keys = tmp_path / "jwks.json"
    keys.write_text('{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}')
    result = tally(tmp_path, "serve", env={"TALLY_DATABASE_URL": database_url, "TALLY_JWT_PUBLIC_KEYS": str(keys)})
    assert_one_line_error(result, "refusing to start", "only RSA and P-256 EC keys")


def test_serve_on_a_busy_port_is_one_line(tmp_path, database_url):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = tally(tmp_path, "serve", "--port", port, env={"TALLY_DATABASE_URL": database_url, "TALLY_JWT_SECRET": SECRET})
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}", "in use")


def test_token_without_a_secret_is_one_line(tmp_path, database_url):
    result = tally(tmp_path, "token", "--project", "p", "--scope", "ingest", env={"TALLY_DATABASE_URL": database_url})
    assert_one_line_error(result, "TALLY_JWT_SECRET")


@pytest.mark.parametrize("ttl", ["forever", "0", "-5d", "3w"])
def test_token_with_a_bad_ttl_is_one_line(tmp_path, ttl):
    result = tally(tmp_path, "token", "--project", "p", "--scope", "ingest", "--ttl", ttl, env={"TALLY_JWT_SECRET": SECRET})
    assert_one_line_error(result, "--ttl")


@pytest.mark.parametrize("project", ["", "p" * 65])
def test_token_for_a_project_the_api_would_refuse_is_one_line(tmp_path, project):
    result = tally(tmp_path, "token", "--project", project, "--scope", "ingest", env={"TALLY_JWT_SECRET": SECRET})
    assert_one_line_error(result, "--project")


def test_token_with_an_unknown_scope_is_one_line(tmp_path):
    result = tally(tmp_path, "token", "--project", "p", "--scope", "ingest write", env={"TALLY_JWT_SECRET": SECRET})
    assert_one_line_error(result, "--scope")


@pytest.mark.parametrize(
    "args",
    [["token", "--scope", "ingest"], ["serve", "--workers", "0"], ["serve", "--role", "admin"], ["frobnicate"], []],
    ids=["missing-project", "zero-workers", "unknown-role", "unknown-command", "no-command"],
)
def test_usage_errors_are_one_line(tmp_path, args):
    assert_one_line_error(tally(tmp_path, *args, env={"TALLY_JWT_SECRET": SECRET}))


def test_token_prints_a_jwt_that_verifies_with_the_secret_and_a_unique_jti(tmp_path):
    args = ["token", "--project", "shop", "--scope", "ingest query", "--ttl", "2h", "--sub", "loader"]
    first, second = (tally(tmp_path, *args, env={"TALLY_JWT_SECRET": SECRET}) for _ in range(2))
    assert first.returncode == second.returncode == 0, first.stderr
    claims = [
        jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="tally") for result in (first, second)
    ]
    assert claims[0]["project"] == "shop"
    assert claims[0]["scope"].split() == ["ingest", "query"]
    assert claims[0]["sub"] == "loader"
    assert abs(claims[0]["exp"] - (time.time() + 7200)) < 120
    assert claims[0]["jti"] != claims[1]["jti"]


def test_settings_are_read_from_dotenv(tmp_path):
    (tmp_path / ".env").write_text(f"TALLY_JWT_SECRET={SECRET}\nTALLY_JWT_AUDIENCE=tally-eu\n")
    result = tally(tmp_path, "token", "--project", "p", "--scope", "ingest")
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="tally-eu")["project"] == "p"


def test_migrate_brings_a_new_database_to_the_head(tmp_path, create_database):
    url = create_database(migrate=False)
    result = tally(tmp_path, "migrate", env={"TALLY_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()


def test_parser_knows_the_documented_commands():
    parser = build_parser()
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--workers", "4", "--role", "ingest"])
    assert (args.host, args.port, args.workers, args.role) == ("0.0.0.0", 9000, 4, "ingest")
    args = parser.parse_args(["token", "--project", "p", "--scope", "ingest query", "--ttl", "30d", "--sub", "me"])
    assert (args.project, args.scope, args.ttl, args.sub) == ("p", "ingest query", "30d", "me")
    assert parser.parse_args(["migrate"]).command == "migrate"


def test_distribute_on_a_database_without_citus_says_so_in_one_line_and_changes_nothing(tmp_path, create_database):
    url = create_database()
    with psycopg.connect(url) as conn:
        before = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    result = tally(tmp_path, "distribute", env={"TALLY_DATABASE_URL": url})
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "no citus extension" in result.stderr, result.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone()[0] == before


def test_every_table_is_distributed_or_a_reference_table():
    from shared.tables import metadata
    from tally.distribute import DISTRIBUTED, REFERENCE

    assert sorted(DISTRIBUTED + REFERENCE) == sorted(metadata.tables)
    assert not set(DISTRIBUTED) & set(REFERENCE)
