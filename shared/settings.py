"""One settings object, read from `TALLY_*` environment variables and `.env`.

Nothing reads the environment anywhere else: `create_app(settings)` receives an instance,
so a test builds `Settings(database_url=..., jwt_secret=...)` and gets a whole app.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Role = Literal["all", "ingest", "query"]
# An origin as browsers send it: scheme://host[:port], nothing after.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", env_file=".env", extra="ignore")

    # None means "use the embedded Postgres under data_dir" (only the `tally` command does that).
    database_url: str | None = None
    jwt_secret: SecretStr | None = None
    jwt_audience: str = "tally"
    jwt_issuer: str | None = None
    # A PEM public key or a JWKS file; keys are chosen by the token's `kid`.
    jwt_public_keys: Path | None = None
    jwt_leeway_seconds: int = Field(30, ge=0, le=300)
    # HMAC key for pagination cursors (queries and the schema list). Unset: derived from
    # jwt_secret; with public keys only there is nothing to derive from, and an app of any role
    # refuses to start.
    cursor_secret: SecretStr | None = None

    db_pool_size: int = Field(10, ge=1, le=200)
    # Seconds a request waits for a pooled connection before it is answered 503 + Retry-After.
    db_pool_timeout: float = Field(2.0, gt=0, le=60)
    db_statement_timeout_ms: int = Field(5000, ge=100)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    data_dir: Path = Path(".tally")
    role: Role = "all"

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_batch_events: int = Field(1000, ge=1)
    # Ingest requests one process handles at once (each holds its body, then its parsed batch).
    max_inflight_requests: int = Field(64, ge=1)
    # Ingest statements one process runs at once (ingest/admission.py: StatementSlots); the rest
    # wait their turn in order. Keep workers x this near 2-3x the database's cores.
    ingest_writers: int = Field(3, ge=1, le=200)
    max_event_bytes: int = Field(32 * 1024, ge=256)
    clock_skew_threshold_seconds: float = Field(60.0, ge=0)
    # Bounded so the future limit (now + tolerance) stays inside the datetime range.
    future_tolerance_seconds: float = Field(86400.0, ge=0, le=10 * 365 * 86400)
    idempotency_ttl_seconds: int = Field(86400, ge=60)
    # Days events are kept (by their timestamp) in projects that never set their own retention
    # (PATCH /v1/project); None keeps them forever.
    retention_days: int | None = Field(None, ge=1, le=36500)
    # Size cap of one tracking-plan schema as JSON: bounds what compiling and checking it cost.
    max_schema_bytes: int = Field(64 * 1024, ge=1024)
    # Pages (origins such as https://dash.example.com) whose scripts may call the query and
    # admin endpoints; ingest takes events from any page (shared/cors.py). Comma-separated.
    cors_origins: Annotated[list[str], NoDecode] = []
    # The database is a Citus coordinator: each batch is written as two statements in one
    # transaction, which Citus keeps on the project's shard (docs/scaling.md), rather than the
    # one statement that is cheapest on a single Postgres.
    citus: bool = False

    @field_validator("database_url")
    @classmethod
    def _plain_postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("TALLY_DATABASE_URL must be a postgresql:// URL")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origin_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [origin.strip() for origin in value.split(",") if origin.strip()]
        if isinstance(value, list):
            for origin in value:
                if not isinstance(origin, str) or not ORIGIN.fullmatch(origin):
                    raise ValueError(f"{origin!r} is not an origin like https://dash.example.com (scheme, host, port)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def sqlalchemy_url(self) -> str:
        """The same database for SQLAlchemy/alembic, through the psycopg 3 driver."""
        assert self.database_url is not None
        return "postgresql+psycopg://" + self.database_url.split("://", 1)[1]
