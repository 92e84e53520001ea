"""The lifecycle's request and response shapes. Strict: `"30"` or `true` is not an integer,
`1` or `"true"` is not a boolean, and an unknown field is refused, each a 422 naming it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.events import MAX_USER_ID

MAX_RETENTION_DAYS = 36500
MAX_ERASURE_USERS = 1000


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


UserId = Annotated[str, Field(min_length=1, max_length=MAX_USER_ID), AfterValidator(_storable)]


class SettingsPatch(BaseModel):
    """A JSON merge patch of the project's settings: the fields sent are set, the others kept."""

    model_config = ConfigDict(extra="forbid", strict=True)

    retention_days: int | None = Field(
        None, ge=1, le=MAX_RETENTION_DAYS,
        description="Days an event is kept, by its `timestamp`; `null` keeps events forever.",
    )


class ProjectSettingsOut(BaseModel):
    project: str
    retention_days: int | None = Field(description="In force: the project's own, else the service's default.")
    retention_source: Literal["project", "default"]
    retained_from: datetime | None = Field(description="The oldest instant kept now; null when everything is kept.")
    updated_at: datetime | None
    updated_by: str | None


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    users: list[UserId] = Field(
        min_length=1, max_length=MAX_ERASURE_USERS,
        description="Ids matched against each event's userId and anonymousId.",
    )
    suppress: bool = Field(False, description="Also refuse every new event of these ids (`user_suppressed`).")


class Erasure(BaseModel):
    id: str
    status: Literal["pending", "running", "done", "failed"]
    users: list[str]
    suppress: bool
    events_erased: int
    requested_at: datetime
    finished_at: datetime | None
    requested_by: str | None
    error: str | None


class ErasurePage(BaseModel):
    data: list[Erasure]
    next_cursor: str | None


class Suppression(BaseModel):
    user_id: str
    erasure_id: str | None
    created_at: datetime
    created_by: str | None


class SuppressionPage(BaseModel):
    data: list[Suppression]
    next_cursor: str | None
