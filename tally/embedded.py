"""The embedded Postgres and the kept dev secret, for `make run` / `make test` with nothing installed.

pgserver (PyPI) ships real Postgres binaries; the cluster lives under `<data_dir>/pg` and keeps
running between commands, so a second `tally` process reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.auth import new_secret


def embedded_database_url(data_dir: Path) -> str:
    """The URL of the embedded server's `postgres` database, starting the server if it is not running."""
    import pgserver  # imported here: only the embedded mode needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str((data_dir / "pg").resolve()), cleanup_mode=None)
    host = server.get_uri().split("host=", 1)[1]
    return f"postgresql://postgres@/postgres?host={host}"


def kept_secret(data_dir: Path) -> str:
    """The dev JWT secret, generated once and kept in `<data_dir>/jwt_secret` (mode 0600)."""
    path = data_dir / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret
