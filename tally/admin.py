"""Admin endpoints: token revocation, served by the roles that write (all, ingest); every role checks it.

A revocation is confined to the caller's project: an admin token of project P revokes (P, jti),
which refuses only P's token with that jti. The answer is the same whether or not such a token
was ever issued (we keep no registry of issued tokens), so it tells nothing about other projects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import AwareDatetime, BaseModel, Field

from shared.auth import Admin
from shared.db import Pool
from shared.revocation import MAX_JTI_LENGTH, revoke

router = APIRouter(tags=["admin"])


class RevocationIn(BaseModel):
    jti: str = Field(min_length=1, max_length=MAX_JTI_LENGTH, description="The `jti` claim of the token to refuse.")
    expires_at: AwareDatetime | None = Field(
        None, description="The token's `exp`, if known: the revocation need not be loaded past it. Omit to keep it for good."
    )


class RevocationResult(BaseModel):
    project: str
    jti: str
    revoked_at: datetime
    expires_at: datetime | None


ERRORS = {
    code: {"description": why, "content": {"application/problem+json": {}}}
    for code, why in {
        401: "Missing or invalid credentials",
        403: "Token lacks scope admin",
        422: "jti missing, empty or longer than 255 characters, or expires_at without an offset",
        503: "Database unavailable; retry after Retry-After",
    }.items()
}


@router.post(
    "/v1/tokens/revoked", response_model=RevocationResult, responses=ERRORS,
    summary="Revoke a token of the caller's project by its jti; refused by every worker within 2 s",
)
async def revoke_token(
    request: Request, principal: Admin, pool: Pool, body: Annotated[RevocationIn, Body()]
) -> RevocationResult:
    revoked_at, expires_at = await revoke(pool, principal.project, body.jti, body.expires_at)
    return RevocationResult(project=principal.project, jti=body.jti, revoked_at=revoked_at, expires_at=expires_at)
