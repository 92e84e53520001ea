"""Admin endpoints: token revocation, served by the roles that write (all, ingest); every role checks it.

A revocation is confined to the caller's project: an admin token of project P revokes (P, jti),
which refuses only P's token with that jti. The answer is the same whether or not such a token
was ever issued (we keep no registry of issued tokens), so it tells nothing about other projects.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Field

from shared.auth import Admin
from shared.body import read_json
from shared.openapi import answers, raw_body
from shared.revocation import MAX_JTI_LENGTH, revoke
from shared.services import ServicesDep

router = APIRouter(tags=["admin"])


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    # As documented (format: date-time): not also a number, or a string of digits, of seconds.
    if value is not None and not (isinstance(value, str) and RFC3339.fullmatch(value)):
        raise ValueError("expires_at must be an RFC 3339 date-time with an offset")
    return value


def _storable(value: str) -> str:
    # Postgres text cannot hold NUL: refused here rather than failing in the database.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


class RevocationIn(BaseModel):
    jti: Annotated[str, AfterValidator(_storable)] = Field(
        min_length=1, max_length=MAX_JTI_LENGTH, description="The `jti` claim of the token to refuse."
    )
    expires_at: Annotated[AwareDatetime, BeforeValidator(_rfc3339)] | None = Field(
        None, description="The token's `exp`, if known: the revocation need not be loaded past it. Omit to keep it for good."
    )


class RevocationResult(BaseModel):
    project: str
    jti: str
    revoked_at: datetime
    expires_at: datetime | None


ANSWERS = answers("admin", {
    400: "Body is not valid JSON, or the client hung up mid-body",
    413: "Body over TALLY_MAX_BODY_BYTES",
    422: "jti missing, empty or longer than 255 characters, or expires_at not an RFC 3339 date-time with an offset",
})
# The body is read raw (bounded, shared.body); this model documents it.
DOCUMENTED_MODELS = [RevocationIn]


@router.post(
    "/v1/tokens/revoked", response_model=RevocationResult, responses=ANSWERS, openapi_extra=raw_body("RevocationIn"),
    summary="Revoke a token of the caller's project by its jti; refused by every worker within 2 s",
)
async def revoke_token(request: Request, principal: Admin, services: ServicesDep) -> RevocationResult:
    body = await read_json(request, RevocationIn, services.settings.max_body_bytes)
    revoked_at, expires_at = await revoke(services.pool, principal.project, body.jti, body.expires_at)
    return RevocationResult(project=principal.project, jti=body.jti, revoked_at=revoked_at, expires_at=expires_at)
