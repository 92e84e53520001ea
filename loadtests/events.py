"""Segment-shaped events of about 560 bytes, as the benchmarks and locust send them, and the
tracking-plan schema their properties satisfy (10 typed properties, required fields, enums,
a format), which the ingest benchmark's checked variant registers for every event name.
Also the one home of what the generators share: the event names and their popularity, and the
column list and types of a binary COPY into `events` (the ingest benchmark's raw-COPY yardstick
and the query benchmark's seeding tool, loadtests/seed.py)."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import datetime, timedelta, timezone

EVENT_NAMES = [f"Event {i:03d}" for i in range(200)]
# Zipf-like popularity (weight 1/rank), here and in the query benchmark's dataset (loadtests/seed.py):
# real products send a few events far more often than the rest. Cumulative weights, for
# random.choices(cum_weights=...); the first n of them are the weights of the first n names.
NAME_WEIGHTS = list(itertools.accumulate(1 / (i + 1) for i in range(len(EVENT_NAMES))))
# A binary COPY into `events`: its columns, in order, and the type of each.
COPY_COLUMNS = (
    "project_id", "message_id", "type", "event", "user_id", "anonymous_id", "ts",
    "original_timestamp", "sent_at", "received_at", "properties", "context", "traits", "extra",
)
COPY_TYPES = (
    "text", "text", "text", "text", "text", "text", "timestamptz",
    "timestamptz", "timestamptz", "timestamptz", "jsonb", "jsonb", "jsonb", "jsonb",
)
PLANS = ["free", "pro", "team", "enterprise"]
CURRENCIES = ["EUR", "USD", "GBP"]

PROPERTIES_SCHEMA = {
    "type": "object",
    "required": ["revenue", "currency", "plan", "items", "order_id"],
    "properties": {
        "revenue": {"type": "number", "minimum": 0},
        "currency": {"enum": CURRENCIES},
        "plan": {"enum": PLANS},
        "items": {"type": "integer", "minimum": 1, "maximum": 100},
        "coupon": {"type": ["string", "null"], "maxLength": 32},
        "path": {"type": "string", "pattern": "^/"},
        "first_visit": {"type": "boolean"},
        "order_id": {"type": "string", "minLength": 8, "maxLength": 64},
        "email": {"type": "string", "format": "email"},
        "discount": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "additionalProperties": False,
}


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
            "currency": rng.choice(CURRENCIES),
            "plan": rng.choice(PLANS),
            "items": rng.randint(1, 9),
            "coupon": None,
            "path": f"/products/{rng.randrange(5000)}",
            "first_visit": rng.random() < 0.1,
            "order_id": f"ord-{rng.getrandbits(40):010x}",
            "email": f"user{rng.randrange(users)}@example.com",
            "discount": round(rng.random() * 0.3, 2),
        },
        "context": {
            "library": {"name": "analytics-python", "version": "2.3.4"},
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "locale": "en-US",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
        },
    }
