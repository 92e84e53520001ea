"""Reading a raw request body: bounded while it streams, and a hang-up is the client's error.

Every endpoint that reads its body itself goes through here, so none can be made to hold more
than the limit or to log a client that went away as a server error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from shared.errors import BadRequest, PayloadTooLarge


class IncompleteBody(BadRequest):
    code, title = "incomplete_body", "Body ended before its Content-Length"


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body exceeds {limit} bytes (measured after decompression)")


async def stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 413 as soon as a declared or received size passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)  # refused before a byte is read (for gzip: already past the inflated limit)
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        # The client hung up mid-body (or sent less than it declared): nobody reads this answer,
        # but logs and metrics should count a client error, not an unhandled server error.
        raise IncompleteBody("the connection closed before the whole body arrived") from None


async def read_raw(request: Request, limit: int) -> bytes:
    """The body as sent, at most `limit` bytes, or a 4xx."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream(request, limit):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
