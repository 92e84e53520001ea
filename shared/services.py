"""What the handlers need, built once by `create_app` and held by the app as one typed object.

Handlers reach it through `services_of(request)` (or the `ServicesDep` dependency); a feature
keeps what only it needs in a frozen object of its own among `roles`, found by its type, so a
role that does not serve the feature has no such object and asking for it fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from shared.auth import TokenVerifier
from shared.metrics import Metrics
from shared.revocation import RevokedTokens
from shared.settings import Settings

Part = TypeVar("Part")


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: AsyncConnectionPool[AsyncConnection]
    verifier: TokenVerifier
    revoked: RevokedTokens
    metrics: Metrics
    # Signs keyset cursors (shared.cursor); every role pages something.
    cursor_key: bytes
    # The migration the code needs; /readyz compares the database's with it.
    head_revision: str
    # Per-role parts, such as ingest's and query's services: at most one of each type.
    roles: tuple[object, ...] = ()

    def role(self, kind: type[Part]) -> Part:
        for part in self.roles:
            if type(part) is kind:
                return part
        raise LookupError(f"{kind.__name__} is not served by role {self.settings.role!r}")


def services_of(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services_of)]
