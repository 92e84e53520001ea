"""JSON bound for jsonb: read exactly as sent, and written only when Postgres holds it as sent.

One decoder for every endpoint. It never alters a value silently: a number that no double or
64-bit integer holds (`1e400`, `1e-400`, a 30-digit integer) and a value nested deeper than
`MAX_DEPTH` are read as `Unstorable` markers, not as `inf`, `0.0`, a rounded float or a
RecursionError for the whole body. `encode` then refuses whatever holds a marker, a NUL, a lone
surrogate or an integer past 64 bits, with a reason, so ingest rejects that one event and the
schema API that one schema, while everything else in the body is read normally.

The fast path is orjson. It is exact except for two cases, which a scan of the body's number
shapes finds without parsing: a run of 19 or more digits (an integer past 64 bits, which orjson
reads as a float, or a long fraction) and a negative exponent of three or more digits (which
may underflow to 0.0). Such bodies, and every body orjson refuses (a lone surrogate, nesting
past its limit, a number out of range, malformed JSON), take Python's parser with hooks, which
reads every number from its text.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from shared.errors import InvalidJSON

# Deeper values become markers before Python's recursive parser could run out of stack; jsonb
# and orjson's encoder stop well before this anyway (orjson at 255 levels), so nothing storable
# is lost.
MAX_DEPTH = 512
# Digits to "0", exponent letters to "e", terminators of a number to ",", the rest to " ".
NUMBER_SHAPES = bytes(
    0x30 if 0x30 <= b <= 0x39
    else 0x65 if b in b"eE"
    else 0x2D if b == 0x2D
    else 0x2C if b in b",]} \t\r\n"
    else 0x20
    for b in range(256)
)
LONG_DIGITS = b"0" * 19
LONG_NEGATIVE_EXPONENT = b"e-000"
# Confirms a LONG_NEGATIVE_EXPONENT hit is a number's exponent, not text such as a UUID's "e-1234-".
NEGATIVE_EXPONENT = re.compile(rb"0e-0{3,},")
# Outside strings, the brackets that open and close a level; strings are matched whole so that
# brackets inside them are skipped.
TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# Stands in for a subtree past MAX_DEPTH: a valid JSON number no client sends, which the float
# hook turns into a marker.
TOO_DEEP = "-0.0e-3141592653589793238462643383279502884197169399375105820974944"


class Unstorable:
    """A value read from JSON that cannot be stored as sent; `reason` says why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class NotStorable(ValueError):
    """`encode` found a value Postgres could not store exactly as sent; the message says which."""


def decode(body: bytes) -> Any:
    """The body's JSON, with unstorable values as `Unstorable` markers; 400 invalid_json if it is not JSON."""
    shapes = body.translate(NUMBER_SHAPES)
    if LONG_DIGITS not in shapes and not (LONG_NEGATIVE_EXPONENT in shapes and NEGATIVE_EXPONENT.search(shapes)):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the exact parser tells a lone surrogate or a deep value from malformed JSON
    try:
        text = body.decode("utf-8")
        try:
            return _exact(text)
        except RecursionError:
            return _exact(_clip(text))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidJSON(f"body is not valid JSON: {str(exc)[:200]}") from None


def _exact(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constants, parse_float=_float, parse_int=_int)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _float(text: str) -> float | Unstorable:
    if text == TOO_DEEP:
        return Unstorable(f"a value is nested more than {MAX_DEPTH} levels deep")
    value = float(text)
    if math.isinf(value):
        return Unstorable(f"the number {text[:40]} is outside a double's range")
    if value == 0.0 and text.lower().partition("e")[0].strip("-+.0"):
        return Unstorable(f"the number {text[:40]} is too close to zero for a double (it would read as 0)")
    return value


def _int(text: str) -> int | Unstorable:
    # Python refuses to convert more than 4300 digits; past 64 bits `encode` refuses anyway.
    return Unstorable(f"the integer {text[:40]}... is outside 64 bits") if len(text) > 40 else int(text)


def _clip(text: str) -> str:
    """`text` with every subtree that starts deeper than MAX_DEPTH replaced by TOO_DEEP."""
    pieces: list[str] = []
    depth = 0
    start = -1
    kept = 0
    for token in TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth == MAX_DEPTH + 1:
                start = token.start()
        elif char in "]}":
            if depth == MAX_DEPTH + 1 and start >= 0:
                pieces += (text[kept:start], TOO_DEEP)
                kept = token.end()
                start = -1
            depth -= 1
    pieces.append(text[kept:])
    return "".join(pieces)


def _refuse(value: object) -> Any:
    if isinstance(value, Unstorable):
        raise NotStorable(value.reason)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


# orjson's own refusals, said in the API's words.
ENCODER_REASONS = {
    "Integer exceeds 64-bit range": "an integer is outside 64 bits",
    "str is not valid UTF-8: surrogates not allowed": "a string holds a lone surrogate (\\ud800 to \\udfff)",
    "Recursion limit reached": "a value is nested more than 254 levels deep",
}


def encode(value: Any) -> bytes:
    """`value` as JSON text Postgres stores exactly as sent, or NotStorable saying why not."""
    try:
        encoded = orjson.dumps(value, default=_refuse)
    except TypeError as exc:  # orjson.JSONEncodeError; a marker's reason is its cause
        if isinstance(exc.__cause__, NotStorable):
            raise exc.__cause__ from None
        raise NotStorable(ENCODER_REASONS.get(str(exc), str(exc))) from None
    if holds_nul(encoded):
        raise NotStorable("a string holds a NUL character (\\u0000), which Postgres cannot store")
    return encoded


# orjson writes NUL as \u0000, which jsonb refuses. An even run of backslashes before it is
# escaped backslashes, i.e. the six literal characters "\u0000", which jsonb stores fine.
ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def holds_nul(encoded: bytes) -> bool:
    """True when orjson-encoded JSON holds a NUL character (in a key or a string)."""
    # The substring test first: the regex is only needed to tell a real NUL from an escaped
    # backslash followed by "u0000".
    return b"\\u0000" in encoded and ESCAPED_NUL.search(encoded) is not None
