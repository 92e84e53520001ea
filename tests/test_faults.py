"""Database crashes under load: a throwaway Postgres that this test starts, SIGKILLs and restarts.

A Jepsen-style history, small enough for CI: client threads send batches as an SDK does (retry
the same messageIds on 5xx, 429 and connection errors, bounded, honouring Retry-After) while the
postmaster is killed with SIGKILL and restarted twice. The checker then reads the database:
every acknowledged event stored exactly once, the counters equal to the events, and no request
slower than the configured timeouts. Killing processes does not test fsync itself (the OS page
cache survives); fsync and synchronous_commit are on so that the claim is the one a user gets.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from shared.settings import Settings
from tally.migrate import upgrade
from tests.factories import auth_headers, fold_counts, make_event
from tests.helpers import free_port, start_server, stop_server

POOL_TIMEOUT = 1.0
STATEMENT_TIMEOUT_MS = 2000
# Pool wait + one statement + a generous margin for a loaded 2-core CI machine.
REQUEST_BOUND = POOL_TIMEOUT + STATEMENT_TIMEOUT_MS / 1000 + 5
# Answers while the database is down must come at about the pool timeout, not a TCP timeout.
DOWN_ANSWER_BOUND = POOL_TIMEOUT + 4


def _pg_bin() -> Path:
    import pgserver  # a locked dependency: real Postgres binaries on any machine with Python

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


class ThrowawayPostgres:
    """A Postgres cluster of our own: own data directory, own port, killable.

    initdb and postgres refuse to run as root; as root we run them as the unprivileged user
    pgserver creates for the same reason (and with pgserver's own permission helpers). The data
    directory is a fresh one under the system temp dir, not under pytest's tmp_path: every pytest
    session that starts (another developer's, say) resets /tmp/pytest-of-<user> to mode 0700,
    which would lock the postgres user out of its own data between a crash and the restart.
    """

    def __init__(self, log: Path):
        self.bin = _pg_bin()
        self.data = Path(tempfile.mkdtemp(prefix="tally-faults-pg-"))
        data = self.data
        self.port = free_port()
        self.user: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log = log
        if os.geteuid() == 0:
            import pwd

            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            self.user = "pgserver"
            entry = ensure_user_exists(self.user)
            ensure_prefix_permissions(data)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, 0o055)
            ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            os.chown(data, entry.pw_uid, entry.pw_gid)
            assert pwd.getpwnam(self.user)
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=utf8", "-N"],
            user=self.user, cwd=data, check=True, capture_output=True, timeout=60,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                    "-k", "", "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on",
                    "-c", "max_connections=50", "-c", "shared_buffers=32MB",
                ],
                user=self.user, cwd=self.data, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("throwaway Postgres did not start:\n" + self.log.read_text()[-3000:])
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends notice and exit on their own."""
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children(recursive=True)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        _, alive = psutil.wait_procs(children, timeout=10)
        for orphan in alive:  # a backend that missed the postmaster's death would block the restart
            orphan.kill()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.data, ignore_errors=True)


@dataclass
class History:
    sent: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    acked_after_retry: set[str] = field(default_factory=set)
    gave_up: set[str] = field(default_factory=set)
    # Events a retry found already stored: their first attempt committed but its answer was lost.
    committed_unanswered: int = 0
    durations: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: str, seconds: float) -> None:
        with self.lock:
            self.durations.append(seconds)
            self.statuses[outcome] = self.statuses.get(outcome, 0) + 1


RETRYABLE = {429, 500, 502, 503, 504}
MAX_ATTEMPTS = 20


def send_like_an_sdk(http: httpx.Client, batch: list[dict], headers: dict, history: History) -> None:
    """Send until a 200, retrying the same body; 4xx other than 429 is final (and unexpected here)."""
    ids = {e["messageId"] for e in batch}
    with history.lock:
        history.sent |= ids
    backoff = 0.1
    for attempt in range(MAX_ATTEMPTS):
        started = time.monotonic()
        retry_after = None
        try:
            response = http.post("/v1/batch", json={"batch": batch}, headers=headers)
            history.record(str(response.status_code), time.monotonic() - started)
            if response.status_code == 200:
                body = response.json()
                if body["accepted"] + body["duplicates"] != len(batch) or body["rejected"]:
                    history.unexpected.append(response.text)
                with history.lock:
                    history.acked |= ids
                    if attempt:
                        history.acked_after_retry |= ids
                        history.committed_unanswered += body["duplicates"]
                return
            if response.status_code not in RETRYABLE and response.status_code != 409:
                history.unexpected.append(f"{response.status_code} {response.text[:300]}")
                return
            retry_after = response.headers.get("retry-after")
        except httpx.TransportError as exc:
            history.record(type(exc).__name__, time.monotonic() - started)
        delay = min(float(retry_after), 2.0) if retry_after and retry_after.isdigit() else backoff
        time.sleep(delay * random.uniform(0.5, 1.0))  # jitter
        backoff = min(backoff * 2, 1.0)
    with history.lock:
        history.gave_up |= ids


def load(base: str, project: str, stop: threading.Event, history: History, keyed: bool) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            batch = [make_event(event=f"E{i % 3}", timestamp=f"2026-11-26T{10 + i % 2}:00:00Z") for i in range(20)]
            headers = auth_headers(project, "ingest")
            if keyed:  # an Idempotency-Key per batch, reused by every retry of it
                headers["Idempotency-Key"] = str(uuid.uuid4())
            send_like_an_sdk(http, batch, headers, history)
            time.sleep(0.02)


def probe_while_down(base: str, project: str) -> dict[str, float]:
    """Every endpoint answers at once and correctly while the database is unreachable."""
    timings = {}
    with httpx.Client(base_url=base, timeout=30) as http:
        for name, request in {
            "ingest": lambda: http.post("/v1/batch", json={"batch": [make_event()]}, headers=auth_headers(project)),
            "aggregates": lambda: http.get("/v1/aggregates", headers=auth_headers(project)),
            "events": lambda: http.get("/v1/events", headers=auth_headers(project)),
            "readyz": lambda: http.get("/readyz"),
        }.items():
            started = time.monotonic()
            response = request()
            timings[name] = round(time.monotonic() - started, 3)
            assert response.status_code == 503, (name, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json", name
            assert int(response.headers["retry-after"]) >= 1, name
            assert timings[name] < DOWN_ANSWER_BOUND, (name, timings[name])
        started = time.monotonic()
        assert http.get("/healthz").status_code == 200
        timings["healthz"] = round(time.monotonic() - started, 3)
    return timings


def wait_ready(base: str, seconds: float = 20) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the service did not recover within {seconds} s of the database restart")


def drain(proc: subprocess.Popen, lines: list[bytes]) -> threading.Thread:
    """Read the server's output so a burst of warnings can never fill the pipe and stall it."""

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(180)
def test_postgres_killed_twice_under_load_loses_no_acknowledged_event(tmp_path):
    pg = ThrowawayPostgres(tmp_path / "postgres.log")
    server = None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        pg.start()
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SHOW fsync").fetchone()[0] == "on"
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        upgrade(Settings(_env_file=None, database_url=pg.url).sqlalchemy_url)
        server, base = start_server(pg.url, env={
            "TALLY_DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
            "TALLY_DB_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
            "TALLY_DB_POOL_SIZE": "4",
        })
        output: list[bytes] = []
        drain(server, output)
        project = "p_fault_" + uuid.uuid4().hex[:8]
        history = History()
        threads = [
            threading.Thread(target=load, args=(base, project, stop, history, i % 2 == 1), daemon=True)
            for i in range(4)
        ]
        for t in threads:
            t.start()

        figures: dict[str, object] = {"down_probes": [], "recovery_seconds": []}
        for _ in range(2):
            time.sleep(3)  # steady load before each crash
            pg.kill()
            figures["down_probes"].append(probe_while_down(base, project))
            time.sleep(1)  # the clients keep retrying into the outage
            pg.start()
            figures["recovery_seconds"].append(round(wait_ready(base), 2))
        time.sleep(3)  # load after the last recovery
        stop.set()
        for t in threads:
            t.join(MAX_ATTEMPTS * 3)
        assert server.poll() is None, "the server process must survive the outages without a restart"

        # What a client reads (rollups plus unfolded deltas) equals the stored events, per hour.
        served = httpx.get(
            base + "/v1/aggregates?interval=hour&from=2026-11-26T00:00:00Z&to=2026-11-27T00:00:00Z&limit=1000",
            headers=auth_headers(project, "query"), timeout=30,
        ).json()["data"]
        with psycopg.connect(pg.url) as conn:
            by_hour = conn.execute(
                "SELECT to_char(date_trunc('hour', ts, 'UTC'), 'HH24'), event, count(*) FROM events "
                "WHERE project_id = %s GROUP BY 1, 2 ORDER BY 1, 2", [project],
            ).fetchall()
        assert sorted((item["bucket"][11:13], item["event"], item["count"]) for item in served) == by_hour

        with psycopg.connect(pg.url) as conn:
            fold_counts(conn)  # the rollups as the folder leaves them, every delta moved in
            rows = conn.execute(
                "SELECT message_id, count(*) FROM events WHERE project_id = %s GROUP BY 1", [project]
            ).fetchall()
            total = conn.execute("SELECT count(*) FROM events WHERE project_id = %s", [project]).fetchone()[0]
            recount = conn.execute(
                "SELECT date_trunc('hour', ts, 'UTC'), event, count(*) FROM events WHERE project_id = %s "
                "GROUP BY 1, 2 ORDER BY 1, 2", [project],
            ).fetchall()
            hourly = conn.execute(
                "SELECT bucket, event, n FROM event_counts_hourly WHERE project_id = %s ORDER BY 1, 2", [project]
            ).fetchall()
            daily_total = conn.execute(
                "SELECT coalesce(sum(n), 0) FROM event_counts_daily WHERE project_id = %s", [project]
            ).fetchone()[0]
        stored = {r[0] for r in rows}
        lost = history.acked - stored
        figures.update(
            sent=len(history.sent), acked=len(history.acked), acked_after_retry=len(history.acked_after_retry),
            committed_unanswered=history.committed_unanswered, gave_up=len(history.gave_up), stored=total, duplicates_stored=total - len(stored), lost=len(lost),
            stored_never_acked=len(stored - history.acked), requests=dict(sorted(history.statuses.items())),
            max_request_seconds=round(max(history.durations), 3),
        )
        print("\nfault figures:", figures)

        assert not history.unexpected, history.unexpected[:5]
        assert lost == set()
        assert total == len(stored)  # no messageId stored twice
        assert stored <= history.sent  # nothing stored that no client sent
        assert history.gave_up == set(), "every batch was retried until 200 within the retry budget"
        assert history.acked == history.sent
        assert hourly == recount
        assert daily_total == total
        assert max(history.durations) < REQUEST_BOUND
        # The crashes must have been felt, or this test proves nothing.
        assert history.acked_after_retry
        assert sum(n for status, n in history.statuses.items() if status != "200") > 0
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        if server is not None:
            stop_server(server)
        pg.stop()


def signal_cluster(pg: ThrowawayPostgres, signum: int) -> None:
    """Send a signal to the postmaster and every backend: SIGSTOP is a stalled database server."""
    assert pg.proc is not None
    for process in [psutil.Process(pg.proc.pid), *psutil.Process(pg.proc.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


STALL_SECONDS = 12


@pytest.mark.timeout(90)
def test_stalled_database_is_503_within_the_timeouts_not_a_hang(tmp_path):
    pg = ThrowawayPostgres(tmp_path / "postgres.log")
    server = None
    resume = None
    try:
        pg.start()
        upgrade(Settings(_env_file=None, database_url=pg.url).sqlalchemy_url)
        server, base = start_server(pg.url, env={
            "TALLY_DB_POOL_TIMEOUT": str(POOL_TIMEOUT), "TALLY_DB_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
        })
        drain(server, [])
        project = "p_stall_" + uuid.uuid4().hex[:8]
        headers = auth_headers(project)
        assert httpx.post(base + "/v1/batch", json={"batch": [make_event()]}, headers=headers).status_code == 200
        time.sleep(1.5)  # idle past the pool's trust window: the next borrow checks the connection
        signal_cluster(pg, signal.SIGSTOP)
        resume = threading.Timer(STALL_SECONDS, signal_cluster, args=(pg, signal.SIGCONT))
        resume.start()
        timings = {}
        with httpx.Client(base_url=base, timeout=STALL_SECONDS + 20) as http:
            for name, call in {
                "ingest": lambda: http.post("/v1/batch", json={"batch": [make_event()]}, headers=headers),
                "aggregates": lambda: http.get("/v1/aggregates", headers=headers),
            }.items():
                started = time.monotonic()
                response = call()
                timings[name] = (response.status_code, round(time.monotonic() - started, 2))
        print(f"\nanswers while the database was stalled for {STALL_SECONDS} s: {timings}")
        for name, (status, seconds) in timings.items():
            assert status == 503, (name, status)
            assert seconds < REQUEST_BOUND, (name, seconds)
    finally:
        if resume is not None:
            resume.cancel()
        with contextlib.suppress(Exception):
            signal_cluster(pg, signal.SIGCONT)
        if server is not None:
            stop_server(server)
        pg.stop()
