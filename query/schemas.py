"""Response shapes for the OpenAPI document; the service writes the JSON bytes itself with orjson."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AggregateRow(BaseModel):
    bucket: str = Field(description="Bucket start: a UTC hour, a local midnight with its offset, or `from` for total.")
    event: str = Field(description="Event name; non-track events count as $identify, $page, $screen, $group, $alias.")
    count: int | None = Field(None, description="Stored events (each messageId once); present when metrics has count.")
    unique_users: int | None = Field(None, description="Distinct userId, else anonymousId; present when asked for.")


class AggregatePage(BaseModel):
    data: list[AggregateRow]
    next_cursor: str | None = Field(description="Pass as `cursor` with the same parameters for the next page.")
    retained_from: datetime | None = Field(
        description="The oldest instant the project keeps (its retention); nothing before it is counted. "
                    "null: everything is kept.")


class EventRow(BaseModel):
    messageId: str
    type: str
    event: str
    userId: str | None
    anonymousId: str | None
    timestamp: str = Field(description="When the event happened, after clock-skew correction.")
    originalTimestamp: str | None = Field(description="The timestamp the client sent.")
    sentAt: str | None
    receivedAt: str
    properties: dict[str, Any] | None
    context: dict[str, Any] | None
    traits: dict[str, Any] | None
    extra: dict[str, Any] | None = Field(description="Every other top-level field the client sent, verbatim.")
    violations: list[dict[str, str]] | None = Field(
        None, description="How the event broke its tracking-plan schema (flag mode): pointer, rule, message."
    )


class EventPage(BaseModel):
    data: list[EventRow]
    next_cursor: str | None
