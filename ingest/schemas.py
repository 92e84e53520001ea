"""Documentation shapes for the OpenAPI document; the hot path never builds these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model

from shared.events import MAX_EVENT_NAME, MAX_MESSAGE_ID, MAX_USER_ID, EventType


EXAMPLE_EVENT = {
    "type": "track", "messageId": "5f0c3b1e-2f4a-4d7e-9b1a-7c2d9e8f6a10", "userId": "user-42",
    "event": "Order Completed", "timestamp": "2026-11-26T10:00:00Z", "properties": {"revenue": 12.5},
}


class EventIn(BaseModel):
    messageId: str = Field(
        min_length=1, max_length=MAX_MESSAGE_ID, description="Client-generated unique id; the dedup key."
    )
    type: EventType | None = Field(None, description="Implied by the path on the single-event endpoints.")
    event: str | None = Field(None, max_length=MAX_EVENT_NAME, description="Event name, required for track.")
    userId: str | float | None = Field(None, description=f"A string or a number, at most {MAX_USER_ID} characters.")
    anonymousId: str | float | None = Field(None, description="As userId; one of the two is required.")
    timestamp: str | None = Field(None, description="ISO-8601 with offset; absent means the time received.")
    properties: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    model_config = {"extra": "allow", "json_schema_extra": {"examples": [EXAMPLE_EVENT]}}


class BatchBase(BaseModel):
    sentAt: str | None = Field(None, description="When the SDK sent the batch; corrects client clock skew.")
    context: dict[str, Any] | None = Field(None, description="Applies to every event; an event's own keys win.")
    model_config = {"extra": "allow", "json_schema_extra": {"examples": [{"batch": [EXAMPLE_EVENT]}]}}


def batch_in(max_batch_events: int) -> type[BaseModel]:
    """The /v1/batch body as this app's settings bound it (TALLY_MAX_BATCH_EVENTS)."""
    return create_model(
        "BatchIn", __base__=BatchBase,
        batch=(list[EventIn], Field(min_length=1, max_length=max_batch_events)),
    )


class EventError(BaseModel):
    index: int
    messageId: str | None
    code: str = Field(description="A per-event rejection code (README: Ingest).")
    detail: str


class IngestResult(BaseModel):
    success: bool
    accepted: int
    duplicates: int
    rejected: int
    errors: list[EventError]
