"""The real segment-analytics-python SDK, pointed at a real `tally serve`, stores each call exactly once."""

from __future__ import annotations

import uuid

import pytest
from segment.analytics import Client

from tests.factories import fold_counts, token_for


def calls(client: Client, tag: str) -> dict[str, str]:
    """One call of each type; returns {messageId: type}."""
    ids = {f"{tag}-{kind}": kind for kind in ("track", "identify", "page", "screen", "group", "alias")}
    client.track("user-1", "Order Completed", {"revenue": 12.5}, message_id=f"{tag}-track")
    client.identify("user-1", {"email": "a@example.com"}, message_id=f"{tag}-identify")
    client.page("user-1", "Docs", "Install", {"path": "/install"}, message_id=f"{tag}-page")
    client.screen("user-1", "App", "Home", message_id=f"{tag}-screen")
    client.group("user-1", "org-9", {"plan": "pro"}, message_id=f"{tag}-group")
    client.alias("anon-1", "user-1", message_id=f"{tag}-alias")
    return ids


@pytest.mark.parametrize(("gzip", "sync_mode"), [(False, True), (True, False)], ids=["plain-sync", "gzip-batched"])
def test_sdk_calls_are_stored_once_with_their_type(live_server, db, gzip, sync_mode):
    project = "p_" + uuid.uuid4().hex[:12]
    errors: list[Exception] = []
    client = Client(
        write_key=token_for(project, "ingest"), host=live_server, gzip=gzip, sync_mode=sync_mode,
        max_retries=1, on_error=lambda error, batch: errors.append(error), upload_interval=0.05,
    )
    expected = calls(client, "first")
    # The SDK resends what it cannot confirm; a resent event must not be stored twice (batched,
    # the resend may even share a batch with the original).
    expected |= calls(client, "first")
    client.flush()  # in sync mode every call already returned after its POST
    assert errors == []
    rows = db.execute(
        "SELECT message_id, type, user_id, properties, traits, extra FROM events WHERE project_id = %s", [project]
    ).fetchall()
    assert sorted((r[0], r[1]) for r in rows) == sorted(expected.items())
    by_id = {r[0]: r for r in rows}
    assert by_id["first-track"][3] == {"revenue": 12.5}
    assert by_id["first-identify"][4] == {"email": "a@example.com"}
    assert by_id["first-alias"][5]["previousId"] == "anon-1"
    assert by_id["first-group"][5]["groupId"] == "org-9"
    fold_counts(db)
    counts = db.execute("SELECT sum(n) FROM event_counts_hourly WHERE project_id = %s", [project]).fetchone()[0]
    assert counts == 6
