"""The ingest benchmark, run small: every phase serves, every request is answered 200 with no
rejected event, and each phase prints its figures. Speed itself is not asserted here (figures
come from `python -m loadtests.bench_ingest` on a quiet machine; see README)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

PHASES = ("end to end", "with tracking plan", "with Idempotency-Key", "bare yardstick app")


def test_benchmark_runs_every_phase_and_prints_its_figures(server_url: str):
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_ingest", "--database-url", server_url,
         "--events", "3000", "--copy-events", "2000", "--clients", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert re.search(r"raw COPY before .*: [\d,]+ events/s; CPU per event: Postgres and the rest "
                     r"-?[\d.]+ us, COPY client [\d.]+ us", out), out
    for phase in PHASES:
        line = next((l for l in out.splitlines() if l.startswith(phase + " (")), None)
        assert line is not None, f"no figures for {phase}:\n{out}"
        assert re.search(r": [\d,]+ events/s = \d+% of raw COPY, p50 [\d.]+ ms, p99 [\d.]+ ms", line), line
        assert re.search(r"CPU per event: server [\d.]+ us, Postgres and the rest -?[\d.]+ us, "
                         r"load generator [\d.]+ us$", line), line
        # Every request answered 200, and no event was rejected (the generator sends valid events).
        statuses = re.search(r"statuses (\{.*?\})", line).group(1)
        assert re.fullmatch(r"\{200: \d+\}", statuses), line
    assert re.search(r"Tally end to end: [\d.]+x the bare app's rate", out), out
    assert re.search(r"tracking plan checked on every event: \d+% of the unchecked", out), out
