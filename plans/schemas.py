"""Request and response bodies of /v1/schemas (read raw and decoded by shared.body.as_model)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.events import MAX_EVENT_NAME

MAX_DESCRIPTION_LENGTH = 2000
NO_NUL = r"^[^\x00]*$"  # for names in paths; Postgres text cannot hold NUL


def _storable(value: str) -> str:
    # Postgres text cannot hold NUL: refused here rather than failing in the database.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Mode = Literal["enforce", "flag"]
EventName = Annotated[
    str, Field(min_length=1, max_length=MAX_EVENT_NAME, description=f"1 to {MAX_EVENT_NAME} characters."),
    AfterValidator(_storable),
]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH), AfterValidator(_storable)]
# `schema` is a BaseModel attribute, so the field is `schema_`, sent and returned as `schema`.
JsonSchema = Annotated[dict[str, Any], Field(
    alias="schema",
    description="A JSON Schema (draft 2020-12) that the `properties` of this event's track calls must satisfy.",
)]


class SchemaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: EventName
    schema_: JsonSchema
    mode: Mode
    description: Description | None = None


class SchemaReplace(BaseModel):
    """The whole new version; `event` may be omitted, and if sent must be the path's."""

    model_config = ConfigDict(extra="forbid")
    event: EventName | None = None
    schema_: JsonSchema
    mode: Mode
    description: Description | None = None


class SchemaResult(BaseModel):
    event: str
    schema_: JsonSchema
    mode: Mode
    description: str | None
    version: int = Field(description="1 when created, one more on every replace.")
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = Field(description="The `sub` of the token that wrote this version.")


class SchemaPage(BaseModel):
    data: list[SchemaResult]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")
