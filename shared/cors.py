"""CORS as pure ASGI middleware: browsers may send events from any page, and read nothing else
unless the operator names the pages.

- Public paths (the ingest endpoints and what browser SDKs load or post beside them) answer a
  preflight from any origin, and every answer on them, errors included, carries
  `Access-Control-Allow-Origin`, so a page's SDK can read a 4xx or 5xx and retry or drop as it
  was designed to. Write keys are public by design; a token whose `origins` claim lists pages
  refuses the others with 403 (shared/auth.py).
- Every other path (queries, the tracking plan, revocation) is open only to the origins in
  TALLY_CORS_ORIGINS; by default to none, so a page elsewhere can neither send nor read them.

The allowed origin is echoed (with `Vary: Origin`) rather than `*`: RudderStack's XHR sends
credentials mode on some builds, which `*` would fail. Tally never reads cookies, so allowing
credentials grants a page nothing a token does not. The requested headers are echoed once
checked to be header names (a `*` would not cover Authorization).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from starlette.routing import BaseRoute

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Header names as RFC 9110 tokens, comma separated; anything else is not echoed.
HEADER_LIST = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$")
MAX_REQUESTED_HEADERS = 1024
# How long a browser may keep a preflight's answer (Chromium caps it at two hours).
MAX_AGE_SECONDS = 7200
# Answers a page may read besides the CORS-safelisted ones.
EXPOSED = "Retry-After, Idempotent-Replayed, X-Request-ID, ETag, Location"
PUBLIC_METHODS = "POST, GET, OPTIONS"
PRIVATE_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


def paths_of(routes: Iterable[BaseRoute]) -> tuple[re.Pattern[str], ...]:
    """The path patterns of `routes`, templates included (`/v1/projects/{write_key}/settings`)."""
    return tuple(route.path_regex for route in routes)  # type: ignore[attr-defined]


class CORS:
    """Preflights it answers itself, before the request context: they are neither logged nor
    counted in the HTTP metrics."""

    def __init__(self, app: ASGIApp, *, public: tuple[re.Pattern[str], ...], origins: Collection[str]):
        self.app = app
        self.public = public
        self.origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None:  # not a page's request: server SDKs, curl
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        public = any(pattern.match(path) for pattern in self.public)
        if not (public or origin in self.origins):
            await self.app(scope, receive, send)
            return
        allowed = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
        requested_method = _header(scope, b"access-control-request-method")
        if scope["method"] == "OPTIONS" and requested_method is not None:
            await self._preflight(scope, send, allowed, public)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []), *allowed, (b"access-control-expose-headers", EXPOSED.encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, send: Send, allowed: list[tuple[bytes, bytes]], public: bool) -> None:
        headers = [
            *allowed,
            (b"vary", b"Access-Control-Request-Headers"),
            (b"access-control-allow-methods", (PUBLIC_METHODS if public else PRIVATE_METHODS).encode()),
            (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
            (b"content-length", b"0"),
        ]
        requested = _header(scope, b"access-control-request-headers")
        if requested and len(requested) <= MAX_REQUESTED_HEADERS and HEADER_LIST.match(requested.strip()):
            headers.append((b"access-control-allow-headers", requested.strip().encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
