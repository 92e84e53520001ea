"""An ingest body's Content-Type and Content-Encoding, and bounded, streaming gunzip.

The body is read whole before a database connection is taken, so a slow upload holds no
connection. The decompressed size is bounded while it streams: a small gzip body that would
inflate past the limit is refused without ever holding the inflated bytes.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from shared.body import read_raw, stream, too_large
from shared.errors import BadRequest, UnsupportedMediaType

# The body is JSON under each of these: text/plain is what browser SDKs send to avoid a CORS
# pre-flight, and rudder-sdk-node's HTTP client labels its gzipped JSON form-urlencoded.
FORM = "application/x-www-form-urlencoded"
ACCEPTED_TYPES = ("application/json", "text/plain", FORM)
GZIP = ("gzip", "x-gzip")


def media_type(request: Request) -> str | None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return None  # curl and some SDKs send none; the body is parsed as JSON anyway
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not accepted; send JSON as application/json or text/plain"
        )
    return media


def content_encoding(request: Request) -> str | None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in GZIP:
        return "gzip"
    raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send gzip or identity")


async def read_body(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The decompressed body, at most `limit` bytes, and its media type; or a 4xx."""
    media = media_type(request)
    body = await read_raw(request, limit) if content_encoding(request) is None else await _gunzip(request, limit)
    return body, media


def refuse_form(body: bytes, media: str | None) -> None:
    """415 for a form-labelled body that really is form-encoded (name=value&...), where JSON is
    expected: said plainly, rather than "not valid JSON"."""
    if media == FORM and body.lstrip()[:1] not in (b"{", b"["):
        raise UnsupportedMediaType(
            "the body is form-encoded (name=value&...); send the JSON object itself, whatever the Content-Type"
        )


async def _gunzip(request: Request, limit: int) -> bytes:
    # A gzip body may hold several members back to back (RFC 1952 section 2.2): each is inflated
    # in turn, so nothing after the first member is silently dropped; trailing junk is a 400.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    try:
        async for chunk in stream(request, limit):
            data = chunk
            while data:
                if inflater.eof:
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                # max_length bounds what one call may produce; the rest waits in unconsumed_tail.
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise too_large(limit)
                data = inflater.unconsumed_tail or inflater.unused_data
    except zlib.error as exc:
        raise BadRequest(f"body is not valid gzip: {exc}") from None
    if not inflater.eof:
        raise BadRequest("gzip body is truncated")
    return bytes(out)
