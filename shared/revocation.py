"""Token revocation: a per-process copy of `revoked_tokens`, reloaded every second (shared.reload).

Authentication checks the copy, so a request costs no query; a revocation written by any
process (the admin endpoint of any worker, or `tally token revoke`) reaches every worker within
one refresh interval plus one query. A revocation is keyed by (project, jti): an admin of a
project can revoke only its own project's tokens, and learns nothing about other projects.

Failure policy: until a worker has loaded the list once, authenticated requests are answered
503 (it cannot know which tokens are revoked). After that, if the database becomes unreachable,
the last loaded list keeps being enforced; requests that need the database fail 503 anyway.
Tokens without a `jti` cannot be revoked; `tally token` always sets one.
"""

from __future__ import annotations

import time
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

# Rows of tokens expired longer ago than any leeway we allow (settings cap it at 300 s) can be
# skipped: such a token is refused by its exp already.
LOAD_REVOKED = """
SELECT project_id, jti FROM revoked_tokens
WHERE expires_at IS NULL OR expires_at > now() - interval '5 minutes'
"""

# Idempotent: revoking twice keeps the first revoked_at and the later of the two expiries
# (NULL, "forever", wins).
REVOKE = """
INSERT INTO revoked_tokens AS r (project_id, jti, expires_at)
VALUES (%(project)s, %(jti)s, %(expires_at)s)
ON CONFLICT (project_id, jti) DO UPDATE
SET expires_at = CASE WHEN r.expires_at IS NULL OR EXCLUDED.expires_at IS NULL THEN NULL
                      ELSE greatest(r.expires_at, EXCLUDED.expires_at) END
RETURNING revoked_at, expires_at
"""

MAX_JTI_LENGTH = 255


class RevokedTokens:
    """The loaded set of (project, jti); replaced whole on each refresh, so readers need no lock."""

    def __init__(self) -> None:
        self._keys: frozenset[tuple[str, str]] = frozenset()
        self.loaded_at: float | None = None  # time.monotonic() of the last successful load

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    def is_revoked(self, project: str, jti: str | None) -> bool:
        return jti is not None and (project, jti) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    async def refresh(self, pool: AsyncConnectionPool, timeout: float) -> None:
        async with pool.connection(timeout=timeout) as conn:
            cur = await conn.execute(LOAD_REVOKED)
            self._keys = frozenset((project, jti) for project, jti in await cur.fetchall())
        self.loaded_at = time.monotonic()


async def revoke(
    pool: AsyncConnectionPool, project: str, jti: str, expires_at: datetime | None
) -> tuple[datetime, datetime | None]:
    """Store a revocation; returns (revoked_at, expires_at) as stored."""
    async with pool.connection() as conn:
        cur = await conn.execute(REVOKE, {"project": project, "jti": jti, "expires_at": expires_at})
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]
