"""Use cases of the schema resource, always in the principal's project: create, read, list,
replace, delete.

An ETag is 128 random bits, replaced on every write, also when a schema is deleted and created
again, so one ETag never names two versions (a version number would: delete and recreate
starts again at 1), and it tells nothing about other writes (a sequence number would count
every project's).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

from plans import sql
from plans.schemas import SchemaIn, SchemaReplace
from shared import cursor, jsonb
from shared.auth import Principal
from shared.body import as_model
from shared.errors import EventMismatch, InvalidSchema, PreconditionFailed, SchemaExists, SchemaNotFound, SchemaTooLarge
from shared.json_schema import SchemaCompileError, compile_schema


@dataclass(frozen=True, slots=True)
class Resource:
    event: str
    etag: str
    body: bytes  # the JSON representation


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A parsed If-Match header. Absent: unconditional. `*`: any current version."""

    sent: bool = False
    tags: list[str] | None = None  # None: no particular version is required


ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e]*)"')


def new_tag() -> str:
    return secrets.token_urlsafe(16)


def etag_of(tag: str) -> str:
    return f'"{tag}"'


def if_match(header: str | None) -> IfMatch:
    if header is None:
        return IfMatch()
    if header.strip() == "*":
        return IfMatch(sent=True)
    # Strong comparison (RFC 9110 13.1.1): a weak tag never matches; with none left the
    # condition is false (412), not dropped.
    return IfMatch(sent=True, tags=[match[2] for match in ENTITY_TAG.finditer(header) if not match[1]])


def none_match(header: str | None, etag: str) -> bool:
    """If-None-Match holds `*` or this ETag, compared weakly (RFC 9110 13.1.2): answer 304."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(f'"{match[2]}"' == etag for match in ENTITY_TAG.finditer(header))


def _checked(schema: dict[str, Any], max_bytes: int) -> str:
    """The schema as JSON text to store, or 422 saying why it cannot be a plan schema."""
    try:
        encoded = jsonb.encode(schema)
    except jsonb.NotStorable as exc:
        raise InvalidSchema(f"the schema cannot be stored exactly as sent: {exc}") from None
    if len(encoded) > max_bytes:
        raise SchemaTooLarge(f"schema is {len(encoded)} bytes as JSON; the limit is {max_bytes}")
    try:
        compile_schema(schema)
    except SchemaCompileError as exc:
        raise InvalidSchema(str(exc)) from None
    return encoded.decode()


def _item(row: tuple) -> dict[str, Any]:
    event, schema_text, mode, description, version, _etag, created_at, updated_at, updated_by = row
    return {
        "event": event, "schema": orjson.Fragment(schema_text), "mode": mode, "description": description,
        "version": version, "created_at": created_at, "updated_at": updated_at, "updated_by": updated_by,
    }


def _resource(row: tuple) -> Resource:
    return Resource(event=row[0], etag=etag_of(row[5]), body=orjson.dumps(_item(row), option=orjson.OPT_UTC_Z))


def _not_found(event: str) -> SchemaNotFound:
    return SchemaNotFound(f"no schema for event {event!r} in this project")


def _missing(event: str, condition: IfMatch) -> Exception:
    # With If-Match, "no such schema" is a failed precondition too (RFC 9110 13.1.1: `*` is
    # false without a current representation); one statement cannot tell which it was.
    if condition.sent:
        return PreconditionFailed(f"If-Match does not match the current ETag of the schema for {event!r}, or there is none")
    return _not_found(event)


async def create_schema(pool: AsyncConnectionPool, principal: Principal, body: bytes, max_schema_bytes: int) -> Resource:
    given = as_model(body, SchemaIn)
    params = {
        "project": principal.project, "event": given.event, "schema": _checked(given.schema_, max_schema_bytes),
        "mode": given.mode, "description": given.description, "sub": principal.sub, "etag": new_tag(),
    }
    async with pool.connection() as conn:
        row = await (await conn.execute(sql.CREATE_SCHEMA, params)).fetchone()
    if row is None:
        raise SchemaExists(f"event {given.event!r} already has a schema; replace it with PUT")
    return _resource(row)


async def get_schema(pool: AsyncConnectionPool, principal: Principal, event: str) -> Resource:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql.GET_SCHEMA, {"project": principal.project, "event": event})).fetchone()
    if row is None:
        raise _not_found(event)
    return _resource(row)


async def list_schemas(
    pool: AsyncConnectionPool, principal: Principal, limit: int, after_cursor: str | None, key: bytes
) -> bytes:
    scope = cursor.scope_of("schemas")
    params: dict[str, Any] = {"project": principal.project, "limit": limit + 1}
    statement = sql.LIST_SCHEMAS
    if after_cursor is not None:
        (params["after"],) = cursor.open_cursor(key, principal.project, scope, after_cursor)
        statement = sql.LIST_SCHEMAS_AFTER
    async with pool.connection() as conn:
        rows = await (await conn.execute(statement, params)).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursor.issue(key, principal.project, scope, [rows[-1][0]])
    return orjson.dumps({"data": [_item(r) for r in rows], "next_cursor": next_cursor}, option=orjson.OPT_UTC_Z)


async def replace_schema(
    pool: AsyncConnectionPool, principal: Principal, event: str, body: bytes, condition: IfMatch,
    max_schema_bytes: int,
) -> Resource:
    given = as_model(body, SchemaReplace)
    if given.event is not None and given.event != event:
        raise EventMismatch(f"the body names event {given.event!r}, the path {event!r}")
    params = {
        "project": principal.project, "event": event, "schema": _checked(given.schema_, max_schema_bytes),
        "mode": given.mode, "description": given.description, "sub": principal.sub, "etags": condition.tags,
        "etag": new_tag(),
    }
    async with pool.connection() as conn:
        params["revision"], params["now"] = await (await conn.execute(sql.NEXT_REVISION)).fetchone()
        row = await (await conn.execute(sql.REPLACE_SCHEMA, params)).fetchone()
    if row is None:
        raise _missing(event, condition)
    return _resource(row)


async def delete_schema(pool: AsyncConnectionPool, principal: Principal, event: str, condition: IfMatch) -> None:
    params = {"project": principal.project, "event": event, "etags": condition.tags}
    async with pool.connection() as conn:
        row = await (await conn.execute(sql.DELETE_SCHEMA, params)).fetchone()
    if row is None:
        raise _missing(event, condition)
