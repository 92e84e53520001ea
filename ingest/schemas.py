"""Documentation shapes for the OpenAPI document; the hot path never builds these models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class EventIn(BaseModel):
    messageId: str = Field(min_length=1, max_length=200, description="Client-generated unique id; the dedup key.")
    type: Literal["track", "identify", "page", "screen", "group", "alias"] | None = None
    event: str | None = Field(None, max_length=200, description="Event name, required for track.")
    userId: str | int | None = None
    anonymousId: str | int | None = None
    timestamp: str | None = Field(None, description="ISO-8601 with offset; absent means the time received.")
    properties: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    model_config = {"extra": "allow"}


class BatchIn(BaseModel):
    batch: list[EventIn] = Field(min_length=1, max_length=1000)
    sentAt: str | None = None
    context: dict[str, Any] | None = None
    model_config = {"extra": "allow"}


class EventError(BaseModel):
    index: int
    messageId: str | None
    code: str
    detail: str


class IngestResult(BaseModel):
    success: bool
    accepted: int
    duplicates: int
    rejected: int
    errors: list[EventError]

