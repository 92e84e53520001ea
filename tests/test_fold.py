"""The count folder (shared.counts.fold_loop): it folds often, and a database outage is logged
once, not five times a second per worker."""

from __future__ import annotations

import asyncio
import logging

from shared.counts import FOLD_INTERVAL_SECONDS, FoldMetrics, fold_loop
from shared.db import create_pool
from shared.metrics import Metrics
from tests.helpers import free_port, make_settings


def test_an_outage_is_logged_once_while_every_failed_fold_is_counted(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # Nothing listens there: every fold fails to get a connection.
    settings = make_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/none", db_pool_timeout=0.05)
    metrics = FoldMetrics(Metrics())

    async def run() -> None:
        pool = create_pool(settings)
        await pool.open(wait=False)
        task = asyncio.create_task(fold_loop(pool, metrics))
        await asyncio.sleep(FOLD_INTERVAL_SECONDS * 8)
        task.cancel()
        await pool.close()

    with caplog.at_level(logging.WARNING, logger="tally.counts"):
        asyncio.run(run())
    failures = metrics.failures.collect()[0].samples[0].value
    assert failures >= 4
    assert [r.getMessage() for r in caplog.records if r.name == "tally.counts"] == ["count fold failed"]
