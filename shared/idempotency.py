"""The Idempotency-Key protocol (IETF httpapi draft): the header, and replaying a stored answer.

Ingest and the erasure requests honour it alike. A request with a key runs in one transaction:
`claim` takes the key's lock (a second request with the same key is 409 at once) and returns
the answer stored for it, if any (a different body or path is 422); otherwise the service does
its work and then `store`s its answer, which commits with that work. Only successful answers
are stored; a key older than the TTL counts as unused.
"""

from __future__ import annotations

import hashlib
import re

from psycopg import AsyncConnection

from shared.errors import IdempotencyKeyInUse, IdempotencyKeyMismatch, InvalidIdempotencyKey

# Serialises requests that share an Idempotency-Key without blocking: the loser of the race is
# answered 409 at once. The lock is released when the transaction ends, even if the process dies.
TRY_LOCK_IDEMPOTENCY_KEY = "SELECT pg_try_advisory_xact_lock(hashtextextended(%(key)s, hashtextextended(%(project)s, 0)))"

# Only keys younger than the retention count; an older row is overwritten by UPSERT_RESPONSE.
STORED_RESPONSE = """
SELECT fingerprint, status, body FROM idempotency_keys
WHERE project_id = %(project)s AND key = %(key)s AND created_at > now() - make_interval(secs => %(ttl)s)
"""

# EXCLUDED.created_at, not now(), in the update: the time is taken once, in VALUES, and the
# SET holds no function (Citus requires DO UPDATE SET to be immutable: docs/scaling.md).
UPSERT_RESPONSE = """
INSERT INTO idempotency_keys (project_id, key, fingerprint, status, body, created_at)
VALUES (%(project)s, %(key)s, %(fingerprint)s, %(status)s, %(body)s, now())
ON CONFLICT (project_id, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, body = EXCLUDED.body,
    created_at = EXCLUDED.created_at
"""

PURGE_EXPIRED_KEYS = "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %(ttl)s)"

MAX_KEY = 255
ESCAPES = re.compile(r'\\[^"\\]|(?<!\\)"|\\$')


def parse_key(values: list[str]) -> str | None:
    """The key from the request's Idempotency-Key headers: an RFC 8941 sf-string ("...") or a
    bare token, 1 to 255 printable ASCII characters; None without the header."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKey("send one Idempotency-Key header, not several")
    raw = values[0].strip()
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        inner = raw[1:-1]
        if ESCAPES.search(inner):
            raise InvalidIdempotencyKey("Idempotency-Key is not a valid quoted string")
        key = inner.replace('\\"', '"').replace("\\\\", "\\")
    else:
        key = raw
    if not key or len(key) > MAX_KEY:
        raise InvalidIdempotencyKey(f"Idempotency-Key must be 1 to {MAX_KEY} characters")
    if any(not 0x20 <= ord(c) <= 0x7E for c in key):
        raise InvalidIdempotencyKey("Idempotency-Key may hold printable ASCII only")
    return key


def fingerprint(path: str, body: bytes) -> bytes:
    """What a retry must repeat: the endpoint and the decompressed body."""
    return hashlib.sha256(path.encode() + b"\n" + body).digest()


async def claim(conn: AsyncConnection, project: str, key: str, print_: bytes, ttl_seconds: int) -> tuple[int, bytes] | None:
    """Inside the caller's transaction: lock the key, and return the (status, body) stored for
    it, if any. 409 while another request holds the key; 422 if it was used with another request."""
    keys = {"project": project, "key": key}
    locked = await (await conn.execute(TRY_LOCK_IDEMPOTENCY_KEY, keys)).fetchone()
    if not locked[0]:
        raise IdempotencyKeyInUse(
            "the first request with this key has not finished; retry shortly", headers={"Retry-After": "1"}
        )
    stored = await (await conn.execute(STORED_RESPONSE, {**keys, "ttl": ttl_seconds})).fetchone()
    if stored is None:
        return None
    stored_print, status, body = stored
    if bytes(stored_print) != print_:
        raise IdempotencyKeyMismatch("this Idempotency-Key was used with a different body or endpoint")
    return status, bytes(body)


async def store(conn: AsyncConnection, project: str, key: str, print_: bytes, body: bytes, status: int = 200) -> None:
    """Inside the caller's transaction: keep the successful answer for replays."""
    params = {"project": project, "key": key, "fingerprint": print_, "status": status, "body": body}
    await conn.execute(UPSERT_RESPONSE, params)


async def purge_expired(conn: AsyncConnection, ttl_seconds: int) -> int:
    cur = await conn.execute(PURGE_EXPIRED_KEYS, {"ttl": ttl_seconds})
    return cur.rowcount
