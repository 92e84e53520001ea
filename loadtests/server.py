"""A server in a subprocess for the benchmarks: on a free port, yielded once /readyz is 200.

`tally serve` by default; `bare=True` serves loadtests/bare_app.py (the issue's yardstick)
with the same uvicorn settings instead. `free_port` and `wait_ready` are the two halves of
"a subprocess server on a free port, ready when /readyz is 200"; the test suite's
`tests.helpers.start_server` uses them too (this package never imports from tests).
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


class NotReady(RuntimeError):
    """The server exited, or did not answer /readyz with 200, before the deadline."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, base_url: str, timeout: float = 30.0) -> None:
    """Return once GET `base_url`/readyz answers 200. Raise NotReady if `proc` exits first or
    `timeout` seconds pass; the process is left as it is (stopping it is the caller's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotReady(f"exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(base_url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:  # refused while starting, or an HTTPError (503 until the database answers)
            pass
        time.sleep(0.1)
    raise NotReady(f"did not become ready in {timeout:g} s")


@contextlib.contextmanager
def serve(
    database_url: str, secret: str, *, workers: int = 1, env: dict[str, str] | None = None, bare: bool = False
) -> Iterator[tuple[subprocess.Popen, int]]:
    """(process, port) of a ready server; stopped on exit."""
    port = free_port()
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
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}")
        except NotReady as exc:
            raise SystemExit(f"the server {exc} (is the database migrated?)") from None
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
