"""Reading a request body: bounded while it streams, a hang-up is the client's error, and a
JSON body is decoded exactly (shared/jsonb.py) into a model.

Every endpoint reads its body through here rather than through the framework, so none can be
made to hold more than the limit or to log a client that went away as a server error; and
malformed JSON is a 400 everywhere, while a value jsonb cannot store as sent never gets as far
as the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from shared import jsonb
from shared.errors import IncompleteBody, InvalidParameter, PayloadTooLarge

Model = TypeVar("Model", bound=BaseModel)


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


def as_model(body: bytes, model: type[Model]) -> Model:
    """The body as `model`, or 400 invalid_json / 422 invalid_parameter naming each bad field."""
    value = jsonb.decode(body)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [
            {"location": ".".join(str(p) for p in ("body", *err["loc"])), "message": err["msg"]}
            for err in exc.errors(include_url=False)
        ]
        raise InvalidParameter("Invalid value for " + ", ".join(e["location"] for e in errors), errors=errors) from None


async def read_json(request: Request, model: type[Model], limit: int) -> Model:
    """The body, at most `limit` bytes, decoded as `model`."""
    return as_model(await read_raw(request, limit), model)
