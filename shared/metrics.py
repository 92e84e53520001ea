"""Prometheus metrics, built per app on its own registry.

Under `tally serve` the PROMETHEUS_MULTIPROC_DIR variable is set before any worker starts, so
every worker writes its values to files there and a scrape of any worker sums all of them.
Gauges use `livesum`: a dead worker's pool stops counting.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Time a use case spends (ingest, query), finer at the low end than HTTP latency.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        # `_created` series double the output and no dashboard of ours reads them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tally_http_requests_total", "HTTP requests by router, route template, method and status.",
            ["router", "route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "tally_http_request_duration_seconds", "HTTP request latency by router and route template.",
            ["router", "route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.pool_in_use = Gauge(
            "tally_db_pool_connections_in_use", "Pooled connections lent to requests.",
            registry=r, multiprocess_mode="livesum",
        )
        self.pool_idle = Gauge(
            "tally_db_pool_connections_idle", "Pooled connections open and idle.",
            registry=r, multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "tally_db_pool_requests_waiting", "Requests waiting for a pooled connection.",
            registry=r, multiprocess_mode="livesum",
        )

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def histogram(self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def close(self) -> None:
        """At a worker's exit: drop its live gauge files, or its last pool figures count forever."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.mark_process_dead(os.getpid())

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
