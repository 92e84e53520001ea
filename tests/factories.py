"""Plain factory functions for tests: tokens, events, batches."""

from __future__ import annotations

import uuid
from typing import Any

from shared import counts
from shared.auth import mint_token

SECRET = "tally-test-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def token_for(project: str, scopes: str = "ingest query admin", **kwargs: Any) -> str:
    return mint_token(SECRET, project=project, scopes=scopes, **kwargs)


def auth_headers(project: str, scopes: str = "ingest query admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(project, scopes)}"}


def make_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "track",
        "messageId": str(uuid.uuid4()),
        "userId": "user-1",
        "event": "Order Completed",
        "timestamp": "2026-11-26T10:00:00.000Z",
        "properties": {"revenue": 12.5, "currency": "EUR"},
        "context": {"library": {"name": "tests", "version": "1"}},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def make_batch(n: int = 3, **overrides: Any) -> dict[str, Any]:
    return {"batch": [make_event(**overrides) for _ in range(n)]}


def fold_counts(db) -> None:
    """Fold every committed count delta into the rollups, as the service's folder does.

    Tests that read event_counts_hourly/daily directly call this first; it waits for a fold
    already running in a server instead of skipping its turn.
    """
    counts.fold_everything(db)


def assert_counts_match_events(db, project: str) -> None:
    """The maintained hourly and daily counts (after a fold) equal a recount of the stored events."""
    fold_counts(db)
    recount = db.execute(
        "SELECT date_trunc('hour', ts, 'UTC'), event, count(*) FROM events WHERE project_id = %s "
        "GROUP BY 1, 2 ORDER BY 1, 2", [project],
    ).fetchall()
    maintained = db.execute(
        "SELECT bucket, event, n FROM event_counts_hourly WHERE project_id = %s ORDER BY 1, 2", [project]
    ).fetchall()
    assert maintained == recount
    daily = db.execute(
        "SELECT date_trunc('day', ts, 'UTC'), event, count(*) FROM events WHERE project_id = %s "
        "GROUP BY 1, 2 ORDER BY 1, 2", [project],
    ).fetchall()
    assert db.execute(
        "SELECT day, event, n FROM event_counts_daily WHERE project_id = %s ORDER BY 1, 2", [project]
    ).fetchall() == daily
