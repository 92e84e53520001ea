"""Seed a query benchmark dataset: binary COPY of events, then the rollups with set-based SQL.

    python -m loadtests.seed postgresql://postgres@127.0.0.1:5432/tally_bench [--events 10000000]

Shape (defaults): 10 projects, 200 event names with Zipf-like popularity, 100k users (a fifth
of events anonymous-only, with an anonymousId), timestamps uniform over the 30 days before
--end (default: the current hour), about 400-byte events. The database is migrated first.
Secondary indexes and the primary key are dropped during the load and rebuilt after it (a
sorted build instead of 10M random inserts); `event_counts_hourly` is rebuilt from `events` in
one GROUP BY and `event_counts_daily` from it; VACUUM ANALYZE then sets the visibility map (index-only scans) and the statistics.
A comment on `events` records the parameters, so `bench_query` reuses a matching dataset.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg.types.json import set_json_dumps

from loadtests.events import COPY_COLUMNS, COPY_TYPES, EVENT_NAMES, NAME_WEIGHTS
from shared.settings import Settings
from tally.migrate import upgrade

UTC = timezone.utc
CHUNK = 50_000


def marker(args: argparse.Namespace) -> str:
    return (
        f"tally-seed events={args.events} projects={args.projects} names={args.names} "
        f"users={args.users} days={args.days} end={args.end.isoformat()}"
    )


def current_marker(url: str) -> str | None:
    try:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT obj_description('events'::regclass, 'pg_class')").fetchone()[0]
    except psycopg.Error:
        return None


def project_ids(n: int) -> list[str]:
    return [f"bench_p{i:02d}" for i in range(n)]


def _payload_pools(rng: random.Random) -> tuple[list[str], list[str]]:
    properties = [
        json.dumps({
            "revenue": round(rng.random() * 100, 2), "currency": "EUR",
            "plan": rng.choice(["free", "pro", "team", "enterprise"]), "items": rng.randint(1, 9),
            "coupon": None, "path": f"/products/{rng.randrange(5000)}", "first_visit": rng.random() < 0.1,
        })
        for _ in range(997)
    ]
    contexts = [
        json.dumps({
            "library": {"name": "analytics-python", "version": "2.3.4"},
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}", "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        })
        for _ in range(101)
    ]
    return properties, contexts


def rows(args: argparse.Namespace, rng: random.Random, offset: int = 0):
    """Yield chunks of rows; random draws are made in bulk per chunk (the loop is the cost)."""
    projects = project_ids(args.projects)
    names = EVENT_NAMES[: args.names]
    weights = NAME_WEIGHTS[: args.names]
    properties, contexts = _payload_pools(rng)
    span_us = args.days * 86_400_000_000
    start = args.end - timedelta(days=args.days)
    received = args.end
    micro = timedelta(microseconds=1)
    made = 0
    while made < args.events:
        n = min(CHUNK, args.events - made)
        picked = rng.choices(names, cum_weights=weights, k=n)
        chunk = []
        for i in range(n):
            user = rng.randrange(args.users)
            anonymous = f"anon-{user:07d}"
            user_id = None if user % 5 == 0 else f"user-{user:07d}"
            ts = start + micro * rng.randrange(span_us)
            chunk.append((
                projects[(offset + made + i) % len(projects)], "%032x" % rng.getrandbits(128), "track", picked[i],
                user_id, anonymous, ts, ts, None, received,
                properties[(made + i) % 997], contexts[(made + i) % 101], None, None,
            ))
        made += n
        yield chunk


def copy_part(args: argparse.Namespace, part: int, parts: int) -> int:
    """One loader process: its share of the events over its own connection."""
    rng = random.Random(args.seed * 1000 + part)
    share = args.events // parts + (1 if part < args.events % parts else 0)
    mine = argparse.Namespace(**{**vars(args), "events": share})
    started = time.perf_counter()
    copied = 0
    with psycopg.connect(args.database_url) as conn:
        # Pre-serialised JSON text goes through the jsonb dumper unchanged.
        set_json_dumps(lambda value: value if isinstance(value, str) else json.dumps(value), context=conn)
        with conn.cursor() as cur:
            with cur.copy(f"COPY events ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for chunk in rows(mine, rng, offset=part):
                    for row in chunk:
                        copy.write_row(row)
                    copied += len(chunk)
                    if part == 0 and copied % 1_000_000 < CHUNK:
                        _progress(f"loader 0: copied {copied:,} events", started)
    return copied


def seed(args: argparse.Namespace) -> None:
    url = args.database_url
    upgrade(Settings(_env_file=None, database_url=url).sqlalchemy_url)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE events, event_counts_hourly, event_counts_daily, event_count_deltas")
        found = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' AND indexname <> 'pk_events'"
        ).fetchall()
        for name, _ in found:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("ALTER TABLE events DROP CONSTRAINT pk_events")
    with ProcessPoolExecutor(args.loaders) as executor:
        copied = sum(executor.map(copy_part, [args] * args.loaders, range(args.loaders), [args.loaders] * args.loaders))
    _progress(f"copied {copied:,} events; building primary key and indexes", started)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (project_id, message_id)")
        for _, definition in found:
            conn.execute(definition)
        _progress("indexes built; building hourly counts", started)
        conn.execute(
            "INSERT INTO event_counts_hourly (project_id, bucket, event, n) "
            "SELECT project_id, date_trunc('hour', ts, 'UTC'), event, count(*) FROM events GROUP BY 1, 2, 3"
        )
        conn.execute(
            "INSERT INTO event_counts_daily (project_id, day, event, n) "
            "SELECT project_id, date_trunc('day', bucket, 'UTC'), event, sum(n) FROM event_counts_hourly GROUP BY 1, 2, 3"
        )
        _progress("rollups built; VACUUM ANALYZE", started)
        conn.execute("VACUUM (ANALYZE) events")
        conn.execute("VACUUM (ANALYZE) event_counts_hourly")
        conn.execute("VACUUM (ANALYZE) event_counts_daily")
        conn.execute(f"COMMENT ON TABLE events IS '{marker(args)}'")
    _progress(f"seeded {copied:,} events", started)


def _progress(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("database_url")
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--projects", type=int, default=10)
    p.add_argument("--names", type=int, default=200)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument(
        "--end", type=datetime.fromisoformat,
        default=datetime.now(UTC).replace(minute=0, second=0, microsecond=0),
        help="ISO-8601 end of the seeded range (default: the current hour)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loaders", type=int, default=2, help="parallel COPY connections")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.end.tzinfo is None:
        args.end = args.end.replace(tzinfo=UTC)
    seed(args)


if __name__ == "__main__":
    main()
