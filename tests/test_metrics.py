"""Prometheus metrics: labelled by route template (never the raw path), pool gauges, and figures that
cover every worker of `tally serve --workers N`."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tally.app import create_app
from tests.helpers import make_settings, start_server, stop_server

REQUESTS = "tally_http_requests_total"


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def count(text: str, **labels: str) -> float:
    return sum(value for got, value in samples(text, REQUESTS) if labels.items() <= got.items())


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


@pytest.fixture(scope="module")
def metrics_client(database_url: str):
    """An app of its own, so its registry counts only this module's requests."""
    app = create_app(make_settings(database_url))

    @app.get("/test/items/{item_id}")
    async def item(item_id: str) -> dict:
        return {"id": item_id}

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_requests_are_labelled_by_route_template_not_raw_path(metrics_client):
    for item_id in ("a1", "b2", "c3"):
        assert metrics_client.get(f"/test/items/{item_id}").status_code == 200
    metrics_client.get("/no/such/path-zz9")
    text = metrics_client.get("/metrics").text
    assert count(text, route="/test/items/{item_id}", method="GET", status="200", router="ops") == 3
    assert count(text, route="unmatched", status="404") == 1
    for raw in ("a1", "b2", "c3", "path-zz9"):
        assert raw not in text
    assert samples(text, "tally_http_request_duration_seconds_count")


def test_every_api_route_is_labelled_by_its_mounted_template(metrics_client):
    app = metrics_client.app
    documented = app.openapi()["paths"]
    for template, operations in documented.items():
        for method in operations:
            metrics_client.request(method.upper(), concrete(template))
    text = metrics_client.get("/metrics").text
    for template, operations in documented.items():
        for method in operations:
            assert count(text, route=template, method=method.upper()) >= 1, (method, template)


def test_ingest_routes_carry_the_ingest_router_label(metrics_client, auth):
    metrics_client.post("/v1/batch", json={"batch": []}, headers=auth)
    assert count(metrics_client.get("/metrics").text, route="/v1/batch", router="ingest") >= 1


def test_pool_gauges_are_exported(metrics_client):
    text = metrics_client.get("/metrics").text
    for name in ("tally_db_pool_connections_in_use", "tally_db_pool_connections_idle", "tally_db_pool_requests_waiting"):
        assert samples(text, name), name


def worker_dirs(proc) -> tuple[Path, list[int]]:
    """The multiprocess directory and worker pids of a `tally serve --workers N` process (Linux /proc)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers, directory = [], None
    for pid in map(int, children):
        env = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
        )
        if "PROMETHEUS_MULTIPROC_DIR" in env and "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text():
            directory = Path(env["PROMETHEUS_MULTIPROC_DIR"])
            workers.append(pid)
    assert directory is not None
    return directory, workers


def healthz_count_of(directory: Path, pid: int, scratch: Path) -> float:
    """What one worker alone has counted for GET /healthz, read from its own file."""
    scratch = scratch / "one-worker"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    source = directory / f"counter_{pid}.db"
    if not source.exists():
        return 0.0
    shutil.copy(source, scratch / source.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(scratch))
    return count(generate_latest(registry).decode(), route="/healthz", method="GET", status="200")


def test_metrics_cover_all_workers(database_url, tmp_path):
    proc, base = start_server(database_url, "--workers", "2")
    # `Connection: close` makes every request a new connection, which the kernel hands to either
    # worker (a kept-alive connection would stay with one).
    close = {"Connection": "close"}
    try:
        directory, workers = worker_dirs(proc)
        assert len(workers) == 2
        sent = 0
        with httpx.Client(base_url=base) as client:
            # Keep going (bounded) until both workers have served some; then every scrape, whichever
            # worker answers it, must count exactly what was sent.
            while sent < 40 or (sent < 400 and not all(healthz_count_of(directory, pid, tmp_path) for pid in workers)):
                assert client.get("/healthz", headers=close).status_code == 200
                sent += 1
            per_worker = [healthz_count_of(directory, pid, tmp_path) for pid in workers]
            assert all(per_worker), f"one worker served all {sent} requests: {per_worker}"
            assert sum(per_worker) == sent
            # Raw paths, including ones filling a template, must reach no label.
            templated = [p for p in client.get("/openapi.json").json()["paths"] if "{" in p]
            raw = "raw-" + uuid.uuid4().hex[:8]
            for template in templated:
                client.get(re.sub(r"\{[^}]+\}", raw, template), headers=close)
            client.get(f"/v1/{raw}", headers=close)
            for _ in range(6):
                text = client.get("/metrics", headers=close).text
                assert count(text, route="/healthz", method="GET", status="200", router="ops") == sent
                assert count(text, route="unmatched", status="404") == 1
                for template in templated:
                    assert count(text, route=template) == 1, template
                assert raw not in text
                assert samples(text, "tally_db_pool_connections_idle")
    finally:
        stop_server(proc)
