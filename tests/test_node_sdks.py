"""The vendors' own Node SDKs, with their defaults, against a real `tally serve`: every call of
every type is stored exactly once, with the right type, ids and time, also when the first
answer is lost after Tally stored the events and the SDK sends the batch again.

Needs Node and the packages of tests/sdk (`npm ci --prefix tests/sdk`, which .ci/run does)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.factories import token_for
from tests.helpers import ROOT
from tests.proxy import first_posts, lost_acknowledgements

SDK = ROOT / "tests" / "sdk"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not (SDK / "node_modules" / "@segment" / "analytics-node").is_dir(),
    reason="needs node and the SDK packages: npm ci --prefix tests/sdk",
)
TYPES = ["alias", "group", "identify", "page", "screen", "track"]


def run_sdk(sdk: str, host: str, key: str, user: str) -> None:
    result = subprocess.run([NODE, str(SDK / "node_sdks.cjs"), sdk, host, key, user],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr


def stored(db, project: str) -> list[tuple]:
    return db.execute(
        "SELECT type, user_id, ts, original_timestamp, count(*) OVER (PARTITION BY message_id) "
        "FROM events WHERE project_id = %s ORDER BY type", [project],
    ).fetchall()


def assert_each_call_stored_once(db, project: str, user: str, started: datetime) -> None:
    rows = stored(db, project)
    assert [r[0] for r in rows] == TYPES, rows
    for kind, user_id, ts, original, copies in rows:
        assert user_id == user and copies == 1, (kind, user_id, copies)
        # The SDK's own time of the call (RudderStack: originalTimestamp), within the test's run.
        assert original is not None and started - timedelta(seconds=5) <= original <= datetime.now(timezone.utc)
        assert abs(ts - original) < timedelta(seconds=5)


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_every_call_of_a_node_sdk_is_stored_once(live_server, db, project, sdk):
    user = f"node-{sdk}-{uuid.uuid4().hex[:8]}"
    started = datetime.now(timezone.utc)
    run_sdk(sdk, live_server, token_for(project, "ingest"), user)
    assert_each_call_stored_once(db, project, user, started)


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_a_lost_acknowledgement_is_resent_and_stored_once(live_server, db, project, sdk):
    user = f"node-{sdk}-{uuid.uuid4().hex[:8]}"
    started = datetime.now(timezone.utc)
    with lost_acknowledgements(live_server, first_posts(1)) as (proxy, log):
        run_sdk(sdk, proxy, token_for(project, "ingest"), user)
    posts = [entry for entry in log if entry[0] == "POST"]
    assert posts[0][2] == 0 and len(posts) >= 2, log  # the SDK sent the lost batch again
    assert_each_call_stored_once(db, project, user, started)
