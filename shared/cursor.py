"""Opaque keyset cursors: the last row's sort key, signed so a client can neither read nor forge it.

Wire form: base64url(version || payload || tag), no padding, where payload is the JSON list the
service chose (exact values: integer microseconds, strings) and
tag = HMAC-SHA256(key, version || project || scope || payload)[:16].
`scope` is the canonical form of the endpoint and filters the cursor was issued for, so a cursor
replayed by another project or with other filters fails the tag check exactly like an altered
byte: every such case is one 400 `invalid_cursor`, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from shared.errors import InvalidCursor
from shared.settings import Settings

VERSION = 1
TAG_BYTES = 16  # 128-bit tag: forging one is out of reach; shorter cursors than a full digest
MAX_CURSOR_CHARS = 2048  # a real cursor holds two keys, an event name at most 200 characters
KEY_LABEL = b"tally/query-cursor/v1"


def signing_key(settings: Settings) -> bytes:
    """TALLY_CURSOR_SECRET, else a key derived from the JWT secret (never the secret itself)."""
    if settings.cursor_secret is not None:
        return settings.cursor_secret.get_secret_value().encode()
    if settings.jwt_secret is not None:
        return hmac.new(settings.jwt_secret.get_secret_value().encode(), KEY_LABEL, hashlib.sha256).digest()
    raise ValueError(
        "TALLY_CURSOR_SECRET is not set: with only TALLY_JWT_PUBLIC_KEYS configured there is no secret "
        "to sign query cursors with"
    )


def _tag(key: bytes, project: str, scope: bytes, payload: bytes) -> bytes:
    message = b"".join(
        (bytes([VERSION]), _framed(project.encode()), _framed(scope), payload)
    )
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]


def _framed(part: bytes) -> bytes:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") never sign the same bytes.
    return len(part).to_bytes(4, "big") + part


def scope_of(endpoint: str, **filters: Any) -> bytes:
    """The canonical bytes of what a cursor is bound to; equal filters give equal bytes."""
    return orjson.dumps({"endpoint": endpoint, **filters}, option=orjson.OPT_SORT_KEYS)


def issue(key: bytes, project: str, scope: bytes, position: list) -> str:
    payload = orjson.dumps(position)
    raw = bytes([VERSION]) + payload + _tag(key, project, scope, payload)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def open_cursor(key: bytes, project: str, scope: bytes, cursor: str) -> list:
    """The position a cursor carries, or InvalidCursor for anything not issued for this scope."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidCursor("cursor is too long")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is not valid base64url") from None
    # One spelling per cursor: unused trailing bits or padding would let an altered string pass.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != cursor:
        raise InvalidCursor("cursor is not in canonical form")
    if len(raw) < 1 + TAG_BYTES + 2 or raw[0] != VERSION:
        raise InvalidCursor("cursor is malformed or from another version")
    payload, tag = raw[1:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, project, scope, payload)):
        raise InvalidCursor("cursor was altered, or issued for another project or other parameters")
    position = orjson.loads(payload)  # signed by us, so well-formed
    if not isinstance(position, list):
        raise InvalidCursor("cursor is malformed")
    return position
