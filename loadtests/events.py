"""Segment-shaped events of about 550 bytes, as the benchmarks and locust send them."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import datetime, timedelta, timezone

EVENT_NAMES = [f"Event {i:03d}" for i in range(200)]
# Zipf-like popularity (weight 1/rank), as in the query benchmark's dataset (loadtests/seed.py):
# real products send a few events far more often than the rest.
NAME_WEIGHTS = list(itertools.accumulate(1 / (i + 1) for i in range(len(EVENT_NAMES))))
PLANS = ["free", "pro", "team", "enterprise"]


def track_event(rng: random.Random, now: datetime | None = None, users: int = 100_000) -> dict:
    now = now or datetime.now(timezone.utc)
    ts = now - timedelta(seconds=rng.randint(0, 3600))
    return {
        "type": "track",
        "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "userId": f"user-{rng.randrange(users)}",
        "event": rng.choices(EVENT_NAMES, cum_weights=NAME_WEIGHTS)[0],
        "timestamp": ts.isoformat(timespec="milliseconds"),
        "properties": {
            "revenue": round(rng.random() * 100, 2),
            "currency": "EUR",
            "plan": rng.choice(PLANS),
            "items": rng.randint(1, 9),
            "coupon": None,
            "path": f"/products/{rng.randrange(5000)}",
            "first_visit": rng.random() < 0.1,
        },
        "context": {
            "library": {"name": "analytics-python", "version": "2.3.4"},
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        },
    }
