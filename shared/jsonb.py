"""What Postgres's jsonb cannot hold, checked on the JSON text about to be stored."""

from __future__ import annotations

import re

# orjson writes NUL as \u0000, which jsonb refuses. An even run of backslashes before it is
# escaped backslashes, i.e. the six literal characters "\u0000", which jsonb stores fine.
ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def holds_nul(encoded: bytes) -> bool:
    """True when orjson-encoded JSON holds a NUL character (in a key or a string)."""
    # The substring test first: the regex is ten times slower and only needed to tell a real
    # NUL from an escaped backslash followed by "u0000".
    return b"\\u0000" in encoded and ESCAPED_NUL.search(encoded) is not None
