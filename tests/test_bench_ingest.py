"""The ingest benchmark, run small: every phase serves, every request is answered 200 with no
rejected event, and `--json` writes every figure it prints. Speed itself is not asserted here
(figures come from `python -m loadtests.bench_ingest` on a quiet machine; see README)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT

PHASES = ("end to end", "with tracking plan", "with Idempotency-Key", "bare yardstick app")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_benchmark_runs_every_phase_and_writes_its_figures_as_json(server_url: str, tmp_path):
    path = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_ingest", "--database-url", server_url,
         "--events", "3000", "--copy-events", "2000", "--clients", "4", "--json", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(path.read_text())

    for run in ("before", "after"):
        copy = report["copy"][run]
        assert copy["events_per_s"] > 0, report["copy"]
        # CPU per event is a figure, not a speed: "the rest" can dip below zero on a busy machine.
        assert set(copy["cpu_us_per_event"]) == {"postgres_and_rest", "copy_client"}
        assert all(is_number(v) for v in copy["cpu_us_per_event"].values()), copy
    assert report["copy"]["reference_events_per_s"] > 0

    phases = {phase["name"]: phase for phase in report["phases"]}
    assert [phase["name"] for phase in report["phases"]] == list(PHASES), list(phases)
    for name, phase in phases.items():
        # Every request answered 200, and no event was rejected (the generator sends valid events).
        assert set(phase["statuses"]) == {"200"} and phase["statuses"]["200"] > 0, (name, phase["statuses"])
        assert phase["requests_with_rejections"] == 0 and phase["rejected_events"] == 0, (name, phase)
        assert phase["events_per_s"] > 0 and phase["ratio_to_copy"] > 0, (name, phase)
        assert 0 < phase["p50_ms"] <= phase["p99_ms"], (name, phase)
        assert set(phase["cpu_us_per_event"]) == {"server", "postgres_and_rest", "load_generator"}
        assert all(is_number(v) for v in phase["cpu_us_per_event"].values()), (name, phase)

    assert report["ratios"]["tally_vs_bare"] > 0, report["ratios"]
    assert report["ratios"]["plan_vs_plain"] > 0, report["ratios"]
    # The human-readable figures are still printed, one line per phase.
    for name in PHASES:
        assert any(line.startswith(name + " (") for line in result.stdout.splitlines()), result.stdout
