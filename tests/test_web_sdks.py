"""The vendors' own browser SDKs, unchanged, in a real Chromium: a page on one origin loads the
package from npm and calls it; a real `tally serve` on another origin stores every call exactly
once, with the right type, ids and time, in each delivery mode (per call, batched, flushed on
page hide with keepalive, sendBeacon), with settings loaded from Tally, and when the first
answer is lost after Tally stored the events.

Needs Debian's chromium and the packages of tests/sdk (`npm ci --prefix tests/sdk`); .ci/run
installs both."""

from __future__ import annotations

import functools
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.factories import token_for
from tests.helpers import ROOT
from tests.proxy import first_posts, lost_acknowledgements

SDK = ROOT / "tests" / "sdk"
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not (SDK / "node_modules" / "@segment" / "analytics-next").is_dir(),
    reason="needs Debian's chromium (apt-get install chromium) and npm ci --prefix tests/sdk",
)

BUNDLES = {
    "analytics-next": "/node_modules/@segment/analytics-next/dist/umd/index.js",
    "analytics-next-1.83": "/node_modules/segment-analytics-next-1.83/dist/umd/index.js",
    "rudder-v3": "/node_modules/@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js",
    "rudder-v2": "/node_modules/rudder-sdk-js/dist/npm/index.js",
}
INGEST_PATHS = ("/v1/t", "/v1/i", "/v1/p", "/v1/s", "/v1/g", "/v1/a", "/v1/b", "/v1/batch", "/beacon/v1/batch",
                "/v1/track", "/v1/identify", "/v1/page", "/v1/group", "/v1/alias")

# Each SDK's calls, in the page: identify first, so every later call carries the user; alias
# last, to a second id. `deliver` is the SDK's delivery mode; `tally` the API's base URL.
SEGMENT = """async ([key, tally, user, mode]) => {
  const host = tally.split('://')[1];
  const segment = {apiHost: host + '/v1', protocol: 'http'};
  if (mode === 'batching') segment.deliveryStrategy = {strategy: 'batching', config: {size: 6, timeout: 60000}};
  if (mode === 'pagehide') segment.deliveryStrategy = {strategy: 'batching', config: {size: 100, timeout: 60000}};
  // Settings as Segment's CDN would serve them, from Tally; only the integration's host is set here.
  const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
    {writeKey: key, cdnURL: tally}, {integrations: {'Segment.io': segment}});
  await analytics.identify(user, {plan: 'pro'});
  await Promise.all([
    analytics.track('Order Completed', {revenue: 12.5}),
    analytics.page('Docs', 'Pricing'),
    analytics.screen('Home'),
    analytics.group('g-1', {name: 'Acme'}),
  ]);
  await analytics.alias(user + '-2');
}"""

RUDDER_V3 = """async ([key, tally, user, mode]) => {
  const analytics = new rudderanalytics.RudderAnalytics();
  const options = {configUrl: tally, useBeacon: mode === 'beacon', logLevel: 'ERROR'};
  if (mode === 'batch') options.queueOptions = {batch: {enabled: true, maxItems: 5, flushInterval: 500}};
  await new Promise((resolve) => analytics.load(key, tally, {...options, onLoaded: resolve}));
  analytics.identify(user, {plan: 'pro'});
  analytics.track('Order Completed', {revenue: 12.5});
  analytics.page('Docs', 'Pricing');
  analytics.group('g-1', {name: 'Acme'});
  analytics.alias(user + '-2');
}"""

RUDDER_V2 = """async ([key, tally, user, mode]) => {
  const analytics = window.rudderanalytics;
  await new Promise((resolve) => {
    analytics.load(key, tally, {configUrl: tally, useBeacon: mode === 'beacon', logLevel: 'ERROR'});
    analytics.ready(resolve);
  });
  analytics.identify(user, {plan: 'pro'});
  analytics.track('Order Completed', {revenue: 12.5});
  analytics.page('Docs', 'Pricing');
  analytics.group('g-1', {name: 'Acme'});
  analytics.alias(user + '-2');
}"""

SCRIPTS = {"analytics-next": SEGMENT, "analytics-next-1.83": SEGMENT, "rudder-v3": RUDDER_V3, "rudder-v2": RUDDER_V2}
SEGMENT_TYPES = ["alias", "group", "identify", "page", "screen", "track"]
RUDDER_TYPES = ["alias", "group", "identify", "page", "track"]


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """The page's own origin: tests/sdk served by a static file server on another port than Tally's."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(SDK)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # The machine's Chromium; root needs --no-sandbox.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def run_page(browser, page_origin: str, sdk: str, tally: str, key: str, user: str, mode: str,
             stay_until: Callable[[], bool] | None = None) -> list[str]:
    """Load `sdk` into a fresh page, make its calls, stay until `stay_until()` holds (at most
    30 s), then leave the page (page hide); returns what the page logged as an error."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{page_origin}/blank.html")
    page.add_script_tag(url=BUNDLES[sdk])
    page.evaluate(SCRIPTS[sdk], [key, tally, user, mode])
    page.wait_for_timeout(1500)  # per-call and batched requests leave now
    deadline = time.monotonic() + 30
    while stay_until is not None and not stay_until() and time.monotonic() < deadline:
        page.wait_for_timeout(200)  # SDK retries back off for seconds
    page.goto(f"{page_origin}/blank.html?left")  # pagehide: batching flushes with keepalive, beacons go
    page.wait_for_timeout(500)
    context.close()
    return errors


def wait_for_rows(db, project: str, n: int, timeout: float = 20.0) -> list[tuple]:
    """The project's events once n are stored (SDK retries back off for seconds), and a moment more
    so that a duplicate would have shown up too."""
    deadline = time.monotonic() + timeout
    query = ("SELECT type, user_id, ts, original_timestamp, count(*) OVER (PARTITION BY message_id), extra::text "
             "FROM events WHERE project_id = %s ORDER BY type")
    while time.monotonic() < deadline:
        rows = db.execute(query, [project]).fetchall()
        if len(rows) >= n:
            time.sleep(1.0)
            return db.execute(query, [project]).fetchall()
        time.sleep(0.2)
    return db.execute(query, [project]).fetchall()


def assert_each_call_stored_once(db, project: str, user: str, key: str, types: list[str], started: datetime) -> None:
    rows = wait_for_rows(db, project, len(types))
    assert [r[0] for r in rows] == types, rows
    for kind, user_id, ts, original, copies, extra in rows:
        assert copies == 1, (kind, copies)
        # alias: SDKs differ on which of the two ids is the event's userId; the other is previousId.
        assert user_id in ((user, f"{user}-2") if kind == "alias" else (user,)), (kind, user_id)
        assert original is not None and started - timedelta(seconds=5) <= original <= datetime.now(timezone.utc), kind
        assert abs(ts - original) < timedelta(seconds=5), kind
        assert extra is None or (key not in extra and "writeKey" not in extra), extra


CASES = [
    ("analytics-next", "standard", SEGMENT_TYPES),
    ("analytics-next", "batching", SEGMENT_TYPES),
    ("analytics-next", "pagehide", SEGMENT_TYPES),
    ("analytics-next-1.83", "standard", SEGMENT_TYPES),
    ("rudder-v3", "xhr", RUDDER_TYPES),
    ("rudder-v3", "batch", RUDDER_TYPES),
    ("rudder-v3", "beacon", RUDDER_TYPES),
    ("rudder-v2", "xhr", RUDDER_TYPES),
    ("rudder-v2", "beacon", RUDDER_TYPES),
]


@pytest.mark.parametrize("sdk, mode, types", CASES, ids=[f"{sdk}-{mode}" for sdk, mode, _ in CASES])
def test_every_call_of_a_browser_sdk_is_stored_once(browser, page_origin, live_server, db, project, sdk, mode, types):
    user = f"web-{uuid.uuid4().hex[:8]}"
    key = token_for(project, "ingest")
    started = datetime.now(timezone.utc)
    errors = run_page(browser, page_origin, sdk, live_server, key, user, mode)
    assert errors == []
    assert_each_call_stored_once(db, project, user, key, types, started)


LOST = [("analytics-next", "standard", SEGMENT_TYPES), ("analytics-next-1.83", "standard", SEGMENT_TYPES),
        ("rudder-v3", "xhr", RUDDER_TYPES), ("rudder-v2", "xhr", RUDDER_TYPES)]


@pytest.mark.parametrize("sdk, mode, types", LOST, ids=[f"{sdk}-{mode}" for sdk, mode, _ in LOST])
def test_a_lost_acknowledgement_is_resent_and_stored_once(browser, page_origin, live_server, db, project, sdk, mode, types):
    user = f"web-{uuid.uuid4().hex[:8]}"
    key = token_for(project, "ingest")
    started = datetime.now(timezone.utc)
    with lost_acknowledgements(live_server, first_posts(1, INGEST_PATHS)) as (proxy, log):

        def posts() -> list[tuple[str, str, int]]:
            return [entry for entry in log if entry[0] == "POST" and entry[1].split("?")[0] in INGEST_PATHS]

        run_page(browser, page_origin, sdk, proxy, key, user, mode, stay_until=lambda: len(posts()) > len(types))
        assert_each_call_stored_once(db, project, user, key, types, started)
    assert posts()[0][2] == 0 and len(posts()) > len(types), log  # the lost call was sent again
