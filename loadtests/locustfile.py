"""Locust scenario: SDK clients posting batches and dashboards paging through queries.

    TALLY_JWT_SECRET=... locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \
        --headless -u 50 -r 10 -t 5m --csv out/run --batch-size 100 --gzip-share 0.5

Every option below is also an environment variable (LOCUST_BATCH_SIZE...) or a line of a
locust.conf. Tokens are minted from TALLY_JWT_SECRET (and TALLY_JWT_AUDIENCE/ISSUER) as the
server reads them, so the load always authenticates against the server's own configuration.

Responses are checked, not only timed: a fresh batch must be stored whole, a resent batch must
be all duplicates, an Idempotency-Key retry must replay the first answer byte for byte, and a
cursor walk must never repeat a row. A check that fails is a request failure whose message
starts with "contract:"; any one of them fails the run, whatever --max-fail-ratio says.
"""

from __future__ import annotations

import gzip
import logging
import random
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from locust import FastHttpUser, events, task
from locust.runners import WorkerRunner

# `locust -f loadtests/locustfile.py` puts loadtests/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.events import EVENT_NAMES, track_event  # noqa: E402
from shared.auth import mint_token  # noqa: E402
from shared.settings import Settings  # noqa: E402

log = logging.getLogger("tally.locust")

CONTRACT = "contract: "
TOKEN_TTL_SECONDS = 7 * 86400
# Ways a real client gets an event wrong; each is refused alone, the rest of its batch stored.
INVALID_KINDS = ("missing_identity", "missing_message_id", "invalid_timestamp")


@events.init_command_line_parser.add_listener
def add_options(parser) -> None:
    group = parser.add_argument_group("Tally", "load shape and pass/fail gate")

    def option(name: str, type_, default, help_: str) -> None:
        env = "LOCUST_" + name.lstrip("-").replace("-", "_").upper()
        group.add_argument(name, type=type_, default=default, env_var=env, help=f"{help_} (env {env})")

    option("--batch-size", int, 100, "events per /v1/batch request")
    option("--gzip-share", float, 0.5, "share of batches sent gzip-compressed")
    option("--retry-share", float, 0.05, "share of batches sent twice with the same messageIds")
    option("--idempotency-share", float, 0.05, "share of batches sent with an Idempotency-Key, then retried with it")
    option("--invalid-share", float, 0.01, "share of events that are invalid (each must be rejected alone)")
    option("--sdk-wait", float, 0.5, "seconds an SDK user waits between batches (analytics-python flushes every 0.5 s)")
    option("--projects", int, 4, "projects written and read, named <prefix>-0 .. <prefix>-(n-1)")
    option("--project-prefix", str, "loadtest", "project name prefix")
    option("--query-host", str, "", "base URL of the query role, when it is not --host (compose: http://query:8000)")
    option("--page-limit", int, 100, "rows per query page")
    option("--max-pages", int, 5, "pages a dashboard follows through next_cursor per walk")
    option("--dashboard-wait", float, 2.0, "seconds a dashboard user waits between walks")
    option("--max-fail-ratio", float, 0.01, "gate: the run fails above this share of failed requests")
    option("--max-p99-ms", float, 1000.0, "gate: the run fails when the p99 of all requests is above this")


@events.init.add_listener
def check_options(environment, **kwargs) -> None:
    o = environment.parsed_options
    if o is None:  # run as a library, without the command line
        return
    shares = {n: getattr(o, n) for n in ("gzip_share", "retry_share", "idempotency_share", "invalid_share")}
    problems = [f"--{n.replace('_', '-')} {v} is not between 0 and 1" for n, v in shares.items() if not 0 <= v <= 1]
    if o.retry_share + o.idempotency_share > 1:
        problems.append("--retry-share plus --idempotency-share is more than 1")
    if o.batch_size < 1 or o.projects < 1 or o.page_limit < 1 or o.max_pages < 1:
        problems.append("--batch-size, --projects, --page-limit and --max-pages must be at least 1")
    settings = Settings()
    if settings.jwt_secret is None:
        problems.append("TALLY_JWT_SECRET is not set: the load needs the server's secret to mint tokens")
    if problems:
        sys.exit("locustfile: " + "; ".join(problems))
    environment.tally_settings = settings


def _token(environment, project: str, scope: str) -> str:
    s = environment.tally_settings
    return mint_token(
        s.jwt_secret.get_secret_value(), project=project, scopes=scope, audience=s.jwt_audience,
        issuer=s.jwt_issuer, ttl_seconds=TOKEN_TTL_SECONDS, sub="locust",
    )


def _project(environment, rng: random.Random) -> str:
    o = environment.parsed_options
    return f"{o.project_prefix}-{rng.randrange(o.projects)}"


class SdkUser(FastHttpUser):
    """An analytics SDK: batches of track events, some gzipped, some resent, a few invalid."""

    weight = 3

    def wait_time(self) -> float:
        return self.environment.parsed_options.sdk_wait

    def on_start(self) -> None:
        self.rng = random.Random()
        self.o = self.environment.parsed_options
        self.auth = {"Authorization": f"Bearer {_token(self.environment, _project(self.environment, self.rng), 'ingest')}"}

    def make_batch(self) -> tuple[bytes, int]:
        """(JSON body, number of invalid events in it)."""
        now = datetime.now(timezone.utc)
        batch, invalid = [], 0
        for _ in range(self.o.batch_size):
            event = track_event(self.rng, now)
            if self.rng.random() < self.o.invalid_share:
                invalid += 1
                kind = self.rng.choice(INVALID_KINDS)
                if kind == "missing_identity":
                    del event["userId"]
                elif kind == "missing_message_id":
                    del event["messageId"]
                else:
                    event["timestamp"] = "yesterday"
            batch.append(event)
        return orjson.dumps({"batch": batch, "sentAt": now.isoformat()}), invalid

    @task
    def send_batch(self) -> None:
        body, invalid = self.make_batch()
        valid = self.o.batch_size - invalid
        headers = {**self.auth, "Content-Type": "application/json"}
        if self.rng.random() < self.o.gzip_share:
            body = gzip.compress(body, compresslevel=6)  # zlib's default; less load-generator CPU than 9
            headers["Content-Encoding"] = "gzip"
        draw = self.rng.random()
        if draw < self.o.idempotency_share:
            headers["Idempotency-Key"] = str(uuid.uuid4())
            first = self._post(body, headers, "/v1/batch", expect=(valid, 0, invalid))
            if first is not None:
                self._replay(body, headers, first)
            return
        first = self._post(body, headers, "/v1/batch", expect=(valid, 0, invalid))
        if first is not None and draw < self.o.idempotency_share + self.o.retry_share:
            # The SDK did not see the first answer (a timeout) and sends the same events again.
            self._post(body, headers, "/v1/batch (resent messageIds)", expect=(0, valid, invalid))

    def _post(self, body: bytes, headers: dict, name: str, expect: tuple[int, int, int]) -> bytes | None:
        with self.client.post("/v1/batch", data=body, headers=headers, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")
                return None
            result = orjson.loads(r.content)
            got = (result["accepted"], result["duplicates"], result["rejected"])
            if got != expect:
                r.failure(f"{CONTRACT}{name} (accepted, duplicates, rejected) = {got}, expected {expect}")
                return None
            return r.content

    def _replay(self, body: bytes, headers: dict, first: bytes) -> None:
        name = "/v1/batch (Idempotency-Key retry)"
        with self.client.post("/v1/batch", data=body, headers=headers, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")
            elif r.headers.get("Idempotent-Replayed") != "true" or r.content != first:
                r.failure(f"{CONTRACT}{name} did not replay the first response")


class DashboardUser(FastHttpUser):
    """A dashboard: opens a chart or an event list and pages through it by next_cursor."""

    weight = 1

    def __init__(self, environment) -> None:
        options = environment.parsed_options
        if options is not None and options.query_host:
            self.host = options.query_host.rstrip("/")  # FastHttpUser builds its client from self.host
        super().__init__(environment)

    def wait_time(self) -> float:
        return self.environment.parsed_options.dashboard_wait

    def on_start(self) -> None:
        self.rng = random.Random()
        self.o = self.environment.parsed_options
        self.auth = {"Authorization": f"Bearer {_token(self.environment, _project(self.environment, self.rng), 'query')}"}

    @task(3)
    def hourly_chart(self) -> None:
        start = (datetime.now(timezone.utc) - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
        self._walk("/v1/aggregates", {"interval": "hour", "from": start.isoformat()}, ("bucket", "event"))

    @task(1)
    def weekly_chart(self) -> None:
        self._walk("/v1/aggregates", {"interval": "day"}, ("bucket", "event"))

    @task(2)
    def event_list(self) -> None:
        self._walk("/v1/events", {}, ("messageId",))

    @task(1)
    def event_list_by_name(self) -> None:
        self._walk("/v1/events", {"event": self.rng.choice(EVENT_NAMES[:20])}, ("messageId",))

    def _walk(self, path: str, params: dict, key: tuple[str, ...]) -> None:
        params = {**params, "limit": self.o.page_limit}
        seen: set[tuple] = set()
        for page in range(self.o.max_pages):
            name = path if page == 0 else f"{path} (next page)"
            with self.client.get(path, params=params, headers=self.auth, name=name, catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"status {r.status_code}: {(r.text or '')[:200]}")
                    return
                result = orjson.loads(r.content)
                rows = {tuple(row[k] for k in key) for row in result["data"]}
                if len(rows) != len(result["data"]) or rows & seen:
                    r.failure(f"{CONTRACT}{path} returned a row twice in one walk")
                    return
                seen |= rows
                cursor = result.get("next_cursor")
            if not cursor:
                return
            params = {**params, "cursor": cursor}


@events.quitting.add_listener
def gate(environment, **kwargs) -> None:
    """Fail the process (exit 1) when the run breaks the contract or the thresholds."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    o = environment.parsed_options
    total = environment.stats.total
    p99 = total.get_response_time_percentile(0.99) or 0
    # On a master the errors arrive from workers as strings like "CatchResponseError('contract: ...')".
    contract = sum(e.occurrences for e in environment.stats.errors.values() if CONTRACT in str(e.error))
    reasons = []
    if total.num_requests == 0:
        reasons.append("no request was sent")
    if contract:
        reasons.append(f"{contract} responses broke the API contract")
    if total.fail_ratio > o.max_fail_ratio:
        reasons.append(f"fail ratio {total.fail_ratio:.2%} > {o.max_fail_ratio:.2%}")
    if p99 > o.max_p99_ms:
        reasons.append(f"p99 {p99:.0f} ms > {o.max_p99_ms:.0f} ms")
    if reasons:
        log.error("load gate failed: %s", "; ".join(reasons))
        environment.process_exit_code = 1
    elif environment.runner.exceptions:
        log.error("load gate: the locustfile raised exceptions; see above")  # locust then exits 1
    else:
        log.info("load gate passed: %d requests, fail ratio %.2f%%, p99 %.0f ms",
                 total.num_requests, 100 * total.fail_ratio, p99)
        environment.process_exit_code = 0
