"""Helpers the test modules import (fixtures stay in conftest.py): the repository root,
database URLs and settings, and a real `tally serve` subprocess. The "subprocess on a free
port, ready when /readyz is 200" part is loadtests/server.py's, shared with the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from loadtests.server import NotReady, free_port, wait_ready
from shared.settings import Settings
from tests.factories import SECRET

__all__ = ["ROOT", "free_port", "make_settings", "start_server", "stop_server", "with_database"]

ROOT = Path(__file__).resolve().parent.parent


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def make_settings(database_url: str, **overrides) -> Settings:
    return Settings(_env_file=None, database_url=database_url, jwt_secret=SECRET, **overrides)


def start_server(database_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`tally serve` in a subprocess on a free port; returns (process, base URL) once /readyz is 200."""
    port = free_port()
    full_env = {
        **os.environ,
        "TALLY_DATABASE_URL": database_url,
        "TALLY_JWT_SECRET": SECRET,
        "TALLY_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tally.cli", "serve", "--port", str(port), *args],
        env=full_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, timeout=30)
    except NotReady:
        if proc.poll() is not None:
            raise RuntimeError(f"tally serve exited: {proc.stdout.read().decode()[-2000:]}") from None
        proc.kill()
        raise RuntimeError("tally serve did not become ready in 30 s") from None
    return proc, base


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
