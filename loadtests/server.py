"""A server in a subprocess for the benchmarks: on a free port, yielded once /readyz is 200.

`tally serve` by default; `bare=True` serves loadtests/bare_app.py (the issue's yardstick)
with the same uvicorn settings instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serve(
    database_url: str, secret: str, *, workers: int = 1, env: dict[str, str] | None = None, bare: bool = False
) -> Iterator[tuple[subprocess.Popen, int]]:
    """(process, port) of a ready server; stopped on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    full_env = {
        **os.environ, "TALLY_DATABASE_URL": database_url, "BARE_DATABASE_URL": database_url, "TALLY_JWT_SECRET": secret,
        # The default log level (INFO): every request writes its JSON access-log line, as served.
        "TALLY_LOG_LEVEL": "INFO", **(env or {}),
    }
    command = (
        ["uvicorn", "loadtests.bare_app:app", "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        if bare else ["tally.cli", "serve"]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", *command, "--port", str(port), "--workers", str(workers)],
        env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(proc, port)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _wait_ready(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready (is the database migrated?)")
