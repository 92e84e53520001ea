"""Query benchmark: p50/p95/p99 over HTTP for the aggregate and listing pages of the goals.

    python -m loadtests.bench_query [--database-url URL] [--events 10000000] [--requests 200]
    python -m loadtests.bench_query --url http://127.0.0.1:8000 --secret S   # a running server

Seeds the dataset with `loadtests.seed` unless the database already holds a matching one,
starts `tally serve` on it (or uses --url), and times sequential requests on one kept-alive
connection, rotating over the 10 projects, after a warm-up round:
- hourly: a 7-day hourly count page
- daily_users: a 30-day daily count,unique_users page
- total: a total breakdown over 30 days
- events_p1 / events_p500: the 1st and the 500th page of /v1/events (100 events a page)
and, beyond the goals: daily_kolkata (30 days of half-hour-offset days) and total_users
(distinct users per event name over 30 days, the most expensive page there is).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from datetime import datetime, timedelta

import httpx

from loadtests import seed
from loadtests.server import serve
from shared.auth import mint_token

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/tally_query_bench"
SECRET = "bench-query-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def ensure_dataset(args: argparse.Namespace) -> datetime:
    """The end of the seeded range; seeds first unless a dataset of this shape is there."""
    wanted = seed.parser().parse_args([args.database_url, "--events", str(args.events)])
    found = seed.current_marker(args.database_url)
    shape = seed.marker(wanted).rsplit(" end=", 1)[0]
    if found and found.rsplit(" end=", 1)[0] == shape:
        print(f"reusing dataset: {found}", file=sys.stderr)
        return datetime.fromisoformat(found.rsplit(" end=", 1)[1])
    seed.main([args.database_url, "--events", str(args.events)])
    return wanted.end


def scenarios(end: datetime, projects: list[str]) -> dict[str, list[tuple[str, str, dict]]]:
    def iso(t: datetime) -> str:
        return t.isoformat().replace("+00:00", "Z")

    week, month = iso(end - timedelta(days=7)), iso(end - timedelta(days=30))
    return {
        "hourly": [(p, "/v1/aggregates", {"from": week, "to": iso(end), "interval": "hour"}) for p in projects],
        "daily_users": [
            (p, "/v1/aggregates", {"from": month, "to": iso(end), "interval": "day", "metrics": "count,unique_users"})
            for p in projects
        ],
        "total": [(p, "/v1/aggregates", {"from": month, "to": iso(end), "interval": "total"}) for p in projects],
        "events_p1": [(p, "/v1/events", {"limit": 100}) for p in projects],
        # Beyond the goals, for the record: a half-hour zone, and distinct users over 30 days.
        "daily_kolkata": [
            (p, "/v1/aggregates", {"from": month, "to": iso(end), "interval": "day", "tz": "Asia/Kolkata"})
            for p in projects
        ],
        "total_users": [
            (p, "/v1/aggregates", {"from": month, "to": iso(end), "interval": "total", "metrics": "count,unique_users"})
            for p in projects
        ],
    }


def deep_cursors(client: httpx.Client, tokens: dict[str, str], projects: list[str], depth: int) -> list[tuple]:
    """Walk to page `depth` once per project; the timed requests then fetch that page."""
    requests = []
    for project in projects:
        cursor = None
        for _ in range(depth - 1):
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            cursor = client.get("/v1/events", params=params, headers=_auth(tokens, project)).json()["next_cursor"]
        requests.append((project, "/v1/events", {"limit": 100, "cursor": cursor}))
    return requests


def _auth(tokens: dict[str, str], project: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[project]}"}


def measure(client: httpx.Client, tokens: dict[str, str], requests: list[tuple], n: int) -> tuple[list[float], float]:
    for project, path, params in requests:  # warm-up: one round, untimed
        client.get(path, params=params, headers=_auth(tokens, project)).raise_for_status()
    latencies, rows = [], 0
    for i in range(n):
        project, path, params = requests[i % len(requests)]
        started = time.perf_counter()
        response = client.get(path, params=params, headers=_auth(tokens, project))
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
        rows += len(response.json()["data"])
    return latencies, rows / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--database-url", default=DEFAULT_URL)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--projects", type=int, default=10)
    p.add_argument("--requests", type=int, default=200, help="timed requests per scenario")
    p.add_argument("--only", nargs="*", help="run only these scenarios")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--url", help="benchmark a running server instead (its dataset: loadtests.seed)")
    p.add_argument("--secret", default=SECRET, help="the server's TALLY_JWT_SECRET")
    p.add_argument("--end", type=datetime.fromisoformat, help="with --url: end of the seeded range")
    args = p.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.url:
            end, base = args.end or datetime.fromisoformat(seed.current_marker(args.database_url).rsplit(" end=", 1)[1]), args.url
        else:
            end = ensure_dataset(args)
            _, port = stack.enter_context(
                serve(args.database_url, args.secret, workers=args.workers, env={"TALLY_DB_POOL_SIZE": "10"})
            )
            base = f"http://127.0.0.1:{port}"
        run(args, end, base)


def run(args: argparse.Namespace, end: datetime, base: str) -> None:
    projects = seed.project_ids(args.projects)
    tokens = {p: mint_token(args.secret, project=p, scopes="query", ttl_seconds=7200) for p in projects}
    with httpx.Client(base_url=base, timeout=30) as client:
        plan = scenarios(end, projects)
        if not args.only or "events_p500" in args.only:
            plan["events_p500"] = deep_cursors(client, tokens, projects[:3], 500)
        print(f"{'scenario':<12} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'rows':>6}")
        for name, requests in plan.items():
            if args.only and name not in args.only:
                continue
            latencies, rows = measure(client, tokens, requests, args.requests)
            q = statistics.quantiles(latencies, n=100)
            print(f"{name:<12} {len(latencies):>5} {q[49] * 1e3:>8.1f} {q[94] * 1e3:>8.1f} {q[98] * 1e3:>8.1f} {rows:>6.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
