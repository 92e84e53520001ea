"""The locustfile, run headless for a few seconds against a real `tally serve`.

Locust patches the standard library with gevent on import, so it runs as a subprocess and is
never imported here.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.factories import SECRET
from tests.helpers import ROOT

# Every retry and invalid-event path is taken within a few seconds.
SHAPE = [
    "--batch-size", "20", "--gzip-share", "0.5", "--retry-share", "0.2", "--idempotency-share", "0.2",
    "--invalid-share", "0.05", "--sdk-wait", "0.2", "--dashboard-wait", "0.3", "--page-limit", "10",
    "--max-pages", "3", "--projects", "2",
]


def run_locust(host: str, out: Path, *args: str, seconds: int = 5) -> subprocess.CompletedProcess:
    env = {**os.environ, "TALLY_JWT_SECRET": SECRET}
    env.pop("TALLY_DATABASE_URL", None)
    return subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
            "--host", host, "-u", "4", "-r", "4", "-t", f"{seconds}s", "--stop-timeout", "2",
            "--csv", str(out / "run"), "--only-summary", "--project-prefix", f"locust-{uuid.uuid4().hex[:8]}",
            *SHAPE, *args,
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=40,
    )


def stats(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "run_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_a_short_headless_run_sends_every_kind_of_request_and_passes_its_gate(live_server, tmp_path):
    run = run_locust(live_server, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "load gate passed" in run.stderr
    rows = stats(tmp_path)
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0, (tmp_path / "run_failures.csv").read_text()
    for name in ("/v1/batch", "/v1/aggregates", "/v1/events"):
        assert int(rows[name]["Request Count"]) > 0, name
    # The retries happened and were answered as the contract says (a wrong answer is a failure).
    assert int(rows["/v1/batch (resent messageIds)"]["Request Count"]) > 0
    assert int(rows["/v1/batch (Idempotency-Key retry)"]["Request Count"]) > 0


def test_the_run_exits_1_when_p99_passes_its_threshold(live_server, tmp_path):
    run = run_locust(live_server, tmp_path, "--max-p99-ms", "0", seconds=2)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "load gate failed: p99" in run.stderr
