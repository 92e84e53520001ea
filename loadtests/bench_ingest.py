"""Ingest benchmark: end-to-end events/s and latency against this machine's raw COPY rate.

    python -m loadtests.bench_ingest [--database-url URL] [--events 400000] [--workers 2] [--json PATH]

Both figures come from the same run on the same machine, so their ratio holds even when the
absolute rates drift from one run to the next.
- raw COPY: 2 connections, binary COPY of 1000-event batches straight into `events`
  (same table, same indexes), no HTTP, no validation, no dedup, no counts.
- end to end: `tally serve --workers N`, 16 keep-alive connections each posting 100-event
  batches (10% of events repeat an earlier messageId), with validation, dedup, count deltas
  (folded into the hourly and daily rollups by the server's background folder), metrics and
  logging on. A variant sends an Idempotency-Key on every request; another checks
  every event against a tracking-plan schema (loadtests/events.py: 10 typed properties,
  required fields, enums, a format and a pattern) registered in enforce mode for all 200 names,
  and reports its throughput against the unchecked run.
- bare app: the issue's yardstick (loadtests/bare_app.py: raw body, orjson, one INSERT ...
  unnest ... ON CONFLICT DO NOTHING RETURNING, nothing else) under the same load, so the cost of
  Tally's features is read off this machine rather than assumed.
The load generator is a minimal asyncio HTTP/1.1 client writing pre-built requests, so it
takes as little of the 2 cores as possible away from the server and Postgres.
The figures are printed as they come; `--json PATH` also writes them all, at the end, as one
JSON document (settings, COPY before and after, every phase, the derived ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psycopg

from loadtests.events import COPY_COLUMNS, COPY_TYPES, EVENT_NAMES, PROPERTIES_SCHEMA, track_event
from loadtests.server import serve
from shared.auth import mint_token
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "x" * 40
BARE = "bare yardstick app"
BARE_POOL = 4  # loadtests/bare_app.py's pool (max_size)


def fresh_database(server_url: str, name: str) -> str:
    from urllib.parse import urlsplit

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(server_url)._replace(path="/" + name).geturl()
    from tally.migrate import upgrade

    upgrade(Settings(_env_file=None, database_url=url).sqlalchemy_url)
    return url


def reset(url: str) -> None:
    """Every phase starts from empty tables, right after a checkpoint: a phase run on a bigger
    table, or one that a checkpoint starts in the middle of (full-page writes), is slower for
    reasons that have nothing to do with what it measures."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE events, event_count_deltas, event_counts_hourly, event_counts_daily, "
                     "idempotency_keys, event_schemas")
        conn.execute("CHECKPOINT")


class CpuMeter:
    """CPU seconds per event over a phase, split by who spent them: the server's processes, this
    process (the load generator, or COPY's client threads), and the rest of the machine: during
    a phase that is Postgres, plus whatever else the machine runs. On a machine whose speed
    drifts between runs, where the time goes tells more than a rate alone. Linux only."""

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid

    def __enter__(self) -> "CpuMeter":
        self._start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        self.spent = [b - a for a, b in zip(self._start, self._read())]

    def _read(self) -> tuple[float, float, float]:
        with open("/proc/stat") as f:  # user nice system idle iowait irq softirq
            ticks = [int(v) for v in f.readline().split()[1:8]]
        machine = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        return machine, time.process_time(), self._server()

    def _server(self) -> float:
        if self.server_pid is None:
            return 0.0
        import psutil

        root = psutil.Process(self.server_pid)
        total = 0.0
        for proc in (root, *root.children(recursive=True)):
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def per_event(self, events: int) -> dict:
        machine, own, server = (1e6 * v / events for v in self.spent)
        return {"server": server, "postgres": machine - own - server, "client": own}


def copy_rate(url: str, events: int, connections: int = 2, batch: int = 1000, seed: int = 7) -> tuple[float, dict]:
    """Events/s of binary COPY into `events`, `connections` writers in parallel, and CPU per event."""
    reset(url)
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    per_writer = events // connections
    batches = []
    for w in range(connections):
        rows = []
        for _ in range(per_writer):
            e = track_event(rng, now)
            rows.append((
                f"copy-bench-{seed}", e["messageId"], "track", e["event"], e["userId"], None,
                datetime.fromisoformat(e["timestamp"]), datetime.fromisoformat(e["timestamp"]), now, now,
                orjson.dumps(e["properties"]).decode(), orjson.dumps(e["context"]).decode(), None, None,
            ))
        batches.append([rows[i:i + batch] for i in range(0, len(rows), batch)])

    def writer(chunks):
        with psycopg.connect(url) as conn:
            for chunk in chunks:
                with conn.cursor() as cur:
                    with cur.copy(f"COPY events ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(COPY_TYPES)
                        for row in chunk:
                            copy.write_row(row)
                conn.commit()

    threads = [threading.Thread(target=writer, args=(b,)) for b in batches]
    with CpuMeter() as cpu:
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    return per_writer * connections / elapsed, cpu.per_event(per_writer * connections)


def build_requests(host: str, port: int, token: str, total_events: int, batch: int,
                   duplicate_share: float, idempotency: bool) -> list[bytes]:
    rng = random.Random(11)
    now = datetime.now(timezone.utc)
    sent: list[str] = []
    requests = []
    for _ in range(total_events // batch):
        events = []
        for _ in range(batch):
            e = track_event(rng, now)
            if sent and rng.random() < duplicate_share:
                e["messageId"] = rng.choice(sent)
            else:
                sent.append(e["messageId"])
            events.append(e)
        body = orjson.dumps({"batch": events, "sentAt": now.isoformat()})
        head = (
            f"POST /v1/batch HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        )
        if idempotency:
            head += f"Idempotency-Key: \"{uuid.UUID(int=rng.getrandbits(128))}\"\r\n"
        requests.append(head.encode() + b"\r\n" + body)
    return requests


async def _client(
    host: str, port: int, queue: list[bytes], latencies: list[float], statuses: dict, rejected: list[int],
    delay: float,
) -> None:
    # Connections open one after another: opened all at once, they tend to land on one
    # uvicorn worker, which would measure one worker, not the server (hence the printed
    # "connections per worker").
    await asyncio.sleep(delay)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while queue:
            request = queue.pop()
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            status = int(status_line.split()[1])
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200 and b'"rejected":' in body and b'"rejected":0,' not in body:  # all are valid
                rejected[0] += 1
                rejected[1] += orjson.loads(body)["rejected"]
    finally:
        writer.close()


async def _drive(
    host: str, port: int, requests: list[bytes], clients: int
) -> tuple[float, list[float], dict, list[int]]:
    """(seconds, latencies, {status: requests}, [requests with rejected events, rejected events])."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    rejected = [0, 0]
    queue = list(reversed(requests))
    start = time.perf_counter()
    await asyncio.gather(
        *(_client(host, port, queue, latencies, statuses, rejected, 0.02 * i) for i in range(clients))
    )
    return time.perf_counter() - start, latencies, statuses, rejected


def connections_per_worker(server_pid: int, port: int) -> list[int]:
    """How many client connections each uvicorn worker holds (the split the run measured)."""
    import psutil

    counts = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.Error:
            continue
        n = sum(1 for c in conns if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)
        if n:
            counts.append(n)
    return sorted(counts, reverse=True)


def register_plan(base: str, project: str) -> None:
    """A schema for every event name, in enforce mode; returns once the server enforces it."""
    import httpx

    admin = {"Authorization": "Bearer " + mint_token(SECRET, project=project, scopes=["admin", "ingest"])}
    with httpx.Client(base_url=base, headers=admin, timeout=10) as client:
        for name in EVENT_NAMES:
            response = client.post("/v1/schemas", json={"event": name, "schema": PROPERTIES_SCHEMA, "mode": "enforce"})
            response.raise_for_status()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # each worker reloads the plan within about a second
            probe = track_event(random.Random(), None)
            probe["properties"]["plan"] = "unknown"
            body = client.post("/v1/batch", json={"batch": [probe]}).json()
            if body["errors"] and body["errors"][0]["code"] == "schema_violation":
                time.sleep(1.5)  # and the other worker
                return
            time.sleep(0.2)
    raise SystemExit("the tracking plan did not take effect")


def http_rate(
    url: str, workers: int, events: int, batch: int, clients: int, idempotency: bool, pool_size: int,
    writers: int, plan: bool = False, bare: bool = False,
) -> dict:
    env = {"TALLY_DB_POOL_SIZE": str(pool_size), "TALLY_INGEST_WRITERS": str(writers)}
    with serve(url, SECRET, workers=workers, env=env, bare=bare) as (proc, port):
        project = f"bench-{uuid.uuid4().hex[:8]}"
        token = mint_token(SECRET, project=project, scopes=["ingest"])
        requests = build_requests("127.0.0.1", port, token, events, batch, 0.10, idempotency)
        reset(url)
        if plan:
            register_plan(f"http://127.0.0.1:{port}", project)
        warmup = requests[: clients * 4]
        asyncio.run(_drive("127.0.0.1", port, warmup, clients))
        split: list[int] = []

        async def drive_and_look() -> tuple[float, list[float], dict, list[int]]:
            task = asyncio.create_task(_drive("127.0.0.1", port, requests[len(warmup):], clients))
            await asyncio.sleep(0.02 * clients + 0.5)
            split.extend(connections_per_worker(proc.pid, port))
            return await task

        with CpuMeter(proc.pid) as cpu:
            elapsed, latencies, statuses, (rejected_requests, rejected_events) = asyncio.run(drive_and_look())
    sent = (len(requests) - len(warmup)) * batch
    latencies.sort()
    return {
        "events_per_s": sent / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "statuses": statuses,
        "rejected_requests": rejected_requests,
        "rejected_events": rejected_events,
        "split": split,
        "cpu": cpu.per_event(sent),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("TALLY_TEST_DATABASE_URL"),
                        help="a server where the benchmark may create database tally_bench (default: embedded)")
    parser.add_argument("--events", type=int, default=400_000, help="events per end-to-end run")
    parser.add_argument("--copy-events", type=int, default=400_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=Settings.model_fields["db_pool_size"].default,
                        help="TALLY_DB_POOL_SIZE per worker (default: the server's)")
    parser.add_argument("--writers", type=int, default=Settings.model_fields["ingest_writers"].default,
                        help="TALLY_INGEST_WRITERS per worker (default: the server's)")
    parser.add_argument("--skip-idempotency", action="store_true")
    parser.add_argument("--skip-plan", action="store_true", help="skip the run with a tracking plan")
    parser.add_argument("--skip-bare", action="store_true", help="skip the run of the bare yardstick app")
    parser.add_argument("--json", dest="json_path", metavar="PATH",
                        help="also write every figure, at the end, to PATH as one JSON document")
    args = parser.parse_args()

    server = args.database_url
    if not server:
        from tally.embedded import embedded_database_url

        server = embedded_database_url(ROOT / ".tally")
    url = fresh_database(server, "tally_bench")

    # COPY is measured before and after the HTTP runs and the ratio is taken against their mean:
    # even from the same starting state one COPY figure alone swings by a third on this machine.
    copy_before, copy_cpu = copy_rate(url, args.copy_events, seed=7)
    print(f"raw COPY before (2 connections, 1000-event batches): {copy_before:,.0f} events/s; CPU per event: "
          f"Postgres and the rest {copy_cpu['postgres']:.1f} us, COPY client {copy_cpu['client']:.1f} us", flush=True)
    runs = [("end to end", False, False, False)]
    runs += [] if args.skip_plan else [("with tracking plan", False, True, False)]
    runs += [] if args.skip_idempotency else [("with Idempotency-Key", True, False, False)]
    runs += [] if args.skip_bare else [(BARE, False, False, True)]
    results = [
        (label, http_rate(url, args.workers, args.events, args.batch, args.clients, idempotency, args.pool_size,
                          args.writers, plan, bare))
        for label, idempotency, plan, bare in runs
    ]
    copy_after, copy_after_cpu = copy_rate(url, args.copy_events, seed=8)
    copy = (copy_before + copy_after) / 2
    print(f"raw COPY after: {copy_after:,.0f} events/s; reference (mean): {copy:,.0f} events/s", flush=True)
    for label, r in results:
        # As printed since the start: a request with rejected events also counts under "with rejections".
        statuses = {**r["statuses"], "with rejections": r["rejected_requests"]} if r["rejected_requests"] else r["statuses"]
        print(
            f"{label} ({args.workers} workers x "
            f"{f'pool {BARE_POOL}' if label == BARE else f'pool {args.pool_size} x {args.writers} writers'}, "
            f"{args.clients} clients, "
            f"{args.batch}-event batches): {r['events_per_s']:,.0f} events/s = "
            f"{r['events_per_s'] / copy:.0%} of raw COPY, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, statuses {statuses}, connections per worker {r['split']}; "
            f"CPU per event: server {r['cpu']['server']:.1f} us, Postgres and the rest {r['cpu']['postgres']:.1f} us, "
            f"load generator {r['cpu']['client']:.1f} us",
            flush=True,
        )
    rates = dict((label, r["events_per_s"]) for label, r in results)
    ratios = {"tally_vs_bare": None, "plan_vs_plain": None}
    if BARE in rates:
        ratios["tally_vs_bare"] = rates["end to end"] / rates[BARE]
        print(f"Tally end to end: {ratios['tally_vs_bare']:.2f}x the bare app's rate", flush=True)
    if "with tracking plan" in rates:
        ratios["plan_vs_plain"] = rates["with tracking plan"] / rates["end to end"]
        print(f"tracking plan checked on every event: {ratios['plan_vs_plain']:.0%} "
              "of the unchecked end-to-end rate", flush=True)
    if args.json_path:
        document = report(args, (copy_before, copy_cpu), (copy_after, copy_after_cpu), results, ratios)
        Path(args.json_path).write_text(json.dumps(document, indent=2) + "\n")


def report(
    args: argparse.Namespace, before: tuple[float, dict], after: tuple[float, dict],
    results: list[tuple[str, dict]], ratios: dict,
) -> dict:
    """Every figure main() prints, as one JSON-ready document: rates in events/s, latencies in
    ms, CPU in microseconds per event, ratios as fractions (0.39, not 39%); unrounded."""
    copy = (before[0] + after[0]) / 2

    def copy_run(rate: float, cpu: dict) -> dict:
        return {"events_per_s": rate,
                "cpu_us_per_event": {"postgres_and_rest": cpu["postgres"], "copy_client": cpu["client"]}}

    return {
        "settings": {
            "events": args.events, "copy_events": args.copy_events, "workers": args.workers,
            "clients": args.clients, "batch": args.batch, "pool_size": args.pool_size, "writers": args.writers,
        },
        "copy": {
            "connections": 2, "batch": 1000,
            "before": copy_run(*before), "after": copy_run(*after), "reference_events_per_s": copy,
        },
        "phases": [
            {
                "name": label,
                "pool_size": BARE_POOL if label == BARE else args.pool_size,
                "writers": None if label == BARE else args.writers,
                "events_per_s": r["events_per_s"],
                "ratio_to_copy": r["events_per_s"] / copy,
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "statuses": {str(status): n for status, n in sorted(r["statuses"].items())},
                "requests_with_rejections": r["rejected_requests"],
                "rejected_events": r["rejected_events"],
                "connections_per_worker": r["split"],
                "cpu_us_per_event": {
                    "server": r["cpu"]["server"], "postgres_and_rest": r["cpu"]["postgres"],
                    "load_generator": r["cpu"]["client"],
                },
            }
            for label, r in results
        ],
        "ratios": ratios,
    }

if __name__ == "__main__":
    main()
