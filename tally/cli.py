"""The `tally` command: serve, migrate, token.

Every failure is one line on stderr naming the problem, and a non-zero exit; never a traceback.
Heavy imports happen inside the commands: PROMETHEUS_MULTIPROC_DIR must be set before
prometheus_client is first imported by the server.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from shared.settings import Settings


class CommandError(Exception):
    """A problem the user can fix; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other failure (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"tally: error: {message} (see `{self.prog} --help`)\n")


def _settings(**overrides):
    from shared.settings import Settings

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "TALLY_" + "_".join(str(p) for p in first["loc"]).upper()
        message = first["msg"].removeprefix("Value error, ")
        raise CommandError(f"invalid setting {name}: {message}") from None


def _resolve_database(settings):
    """Fill in the embedded Postgres and the kept dev secret when no database URL is configured."""
    if settings.database_url is not None:
        return settings, False
    from tally.embedded import embedded_database_url, kept_secret

    try:
        url = embedded_database_url(settings.data_dir)
    except Exception as exc:  # pgserver reports failures with assorted exception types
        raise CommandError(f"cannot start the embedded Postgres under {settings.data_dir}/pg: {exc}") from None
    update = {"database_url": url}
    if settings.jwt_secret is None and settings.jwt_public_keys is None:
        from pydantic import SecretStr

        update["jwt_secret"] = SecretStr(kept_secret(settings.data_dir))
    return settings.model_copy(update=update), True


def _describe(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "the configured database"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _check_database(url: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        # libpq's first line is the failure ("... port 1 failed: Connection refused"); the lines
        # after it are hints. Keep the cause, on one line.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = " ".join(first.rpartition("failed: ")[2].split())
        raise CommandError(f"cannot reach database at {_describe(url)}: {reason}") from None


def _parse_ttl(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match or int(match.group(1)) == 0:
        raise CommandError(f"invalid --ttl {text!r}: use a positive number with s, m, h or d, like 30d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def cmd_migrate(args) -> None:
    settings, _ = _resolve_database(_settings())
    _check_database(settings.database_url)
    from tally.migrate import upgrade

    try:
        upgrade(settings.sqlalchemy_url)
    except Exception as exc:
        raise CommandError(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    print(f"database {_describe(settings.database_url)} is at the latest schema")
    from tally.distribute import NotCitus, distribute

    # On a Citus coordinator, a table a migration created is distributed at once.
    try:
        changed = distribute(settings.database_url)
    except NotCitus:
        return
    if changed:
        print(f"distributed: {', '.join(changed)}")
    _remind_citus(settings)


def _remind_citus(settings: Settings) -> None:
    if not settings.citus:
        print("this is a Citus coordinator: serve with TALLY_CITUS=true, so that each batch stays on "
              "its project's shard (docs/scaling.md)", file=sys.stderr)


def cmd_distribute(args) -> None:
    settings, _ = _resolve_database(_settings())
    _check_database(settings.database_url)
    from tally.distribute import NotCitus, distribute

    try:
        changed = distribute(settings.database_url)
    except NotCitus as exc:
        raise CommandError(str(exc)) from None
    print(f"distributed: {', '.join(changed)}" if changed else "every table is distributed already")
    _remind_citus(settings)


def cmd_token(args) -> None:
    if args.action is not None:
        if args.action != "revoke":
            raise CommandError(f"unknown token action {args.action!r}: use `tally token revoke <jti>`")
        return cmd_revoke(args)
    if args.project is None or args.scope is None:
        missing = " and ".join(name for name, value in (("--project", args.project), ("--scope", args.scope)) if value is None)
        raise CommandError(f"tally token needs {missing}")
    settings = _settings()
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    if secret is None and settings.database_url is None:
        from tally.embedded import kept_secret

        secret = kept_secret(settings.data_dir)
    if secret is None:
        raise CommandError("no TALLY_JWT_SECRET is set: cannot sign a token")
    from shared.auth import MAX_PROJECT_LENGTH, SCOPES, mint_token, valid_project
    from shared.settings import ORIGIN

    if not valid_project(args.project):
        raise CommandError(f"invalid --project {args.project!r}: use 1 to {MAX_PROJECT_LENGTH} characters")
    scopes = args.scope.replace(",", " ").split()
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise CommandError(f"invalid --scope {args.scope!r}: use ingest, query and/or admin")

    origins = [o for o in (args.origins or "").replace(",", " ").split() if o]
    bad = [o for o in origins if not ORIGIN.fullmatch(o)]
    if bad:
        raise CommandError(f"invalid --origins {bad[0]!r}: use origins like https://shop.example.com")
    print(
        mint_token(
            secret, project=args.project, scopes=scopes, audience=settings.jwt_audience,
            issuer=settings.jwt_issuer, ttl_seconds=_parse_ttl(args.ttl), sub=args.sub,
            origins=origins or None,
        )
    )


def cmd_revoke(args) -> None:
    """Revoke by jti (with --project), or by the token itself (its project, jti and exp are read)."""
    if not args.target:
        raise CommandError("tally token revoke needs a jti (with --project) or the token itself")
    project, jti, expires_at = args.project, args.target, None
    if args.target.count(".") == 2:
        import jwt

        try:
            claims = jwt.decode(args.target, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise CommandError("the argument looks like a token but cannot be decoded") from None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("project"), str):
            raise CommandError("the token has no jti or project claim: it cannot be revoked")
        if project is not None and project != claims["project"]:
            raise CommandError(f"the token belongs to project {claims['project']!r}, not {project!r}")
        project, jti = claims["project"], claims["jti"]
        if isinstance(claims.get("exp"), int):
            from datetime import datetime, timezone

            expires_at = datetime.fromtimestamp(claims["exp"], timezone.utc)
    from shared.auth import MAX_PROJECT_LENGTH, valid_project
    from shared.revocation import MAX_JTI_LENGTH, REVOKE

    if project is None:
        raise CommandError("tally token revoke <jti> needs --project (a revocation belongs to one project)")
    if not valid_project(project):
        raise CommandError(f"invalid --project {project!r}: use 1 to {MAX_PROJECT_LENGTH} characters")
    if not 1 <= len(jti) <= MAX_JTI_LENGTH:
        raise CommandError(f"invalid jti: use 1 to {MAX_JTI_LENGTH} characters")
    settings, _ = _resolve_database(_settings())
    _check_database(settings.database_url)
    import psycopg

    try:
        with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
            conn.execute(REVOKE, {"project": project, "jti": jti, "expires_at": expires_at})
    except psycopg.errors.UndefinedTable:
        raise CommandError("the database has no revoked_tokens table: run `tally migrate`") from None
    except psycopg.Error as exc:
        raise CommandError(f"cannot store the revocation: {type(exc).__name__}") from None
    print(f"revoked jti {jti} of project {project}; every worker refuses it within 2 s")


def cmd_serve(args) -> None:
    overrides = {"role": args.role} if args.role else {}
    settings, embedded = _resolve_database(_settings(**overrides))
    if settings.jwt_secret is None and settings.jwt_public_keys is None:
        raise CommandError("refusing to start: set TALLY_JWT_SECRET or TALLY_JWT_PUBLIC_KEYS")
    if settings.jwt_public_keys is not None and not settings.jwt_public_keys.is_file():
        raise CommandError(f"TALLY_JWT_PUBLIC_KEYS: no such file {settings.jwt_public_keys}")
    _check_database(settings.database_url)

    env = os.environ
    env["TALLY_DATABASE_URL"] = settings.database_url
    if settings.jwt_secret is not None:
        env["TALLY_JWT_SECRET"] = settings.jwt_secret.get_secret_value()
    env["TALLY_ROLE"] = settings.role
    # Fresh per start: files of an earlier run would be summed into this one's figures.
    metrics_dir = Path(tempfile.mkdtemp(prefix="tally-metrics-"))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # After its graceful shutdown uvicorn re-raises the signal that stopped it; with the default
    # handler the process would die there and skip the cleanup below. Exit as a signal would
    # (128 + signum), but through `finally`.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_on_signal)
    try:
        _run(settings, args, embedded)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _check_listen(host: str, port: int) -> None:
    """uvicorn reports a busy port as a log line and exit 3; say it like every other failure."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def _run(settings, args, embedded: bool) -> None:
    from tally.app import create_app

    # Build once what every worker will build (after PROMETHEUS_MULTIPROC_DIR is set: the first
    # import of prometheus_client fixes its mode), so an unusable key file or a missing secret
    # stops us here as one line rather than failing in each worker.
    try:
        create_app(settings)
    except (ValueError, OSError) as exc:
        raise CommandError(f"refusing to start: {exc}") from None

    from shared.logging import configure_logging

    configure_logging(settings.log_level)
    if embedded:
        _print_dev_banner(settings, args.host, args.port)

    _check_listen(args.host, args.port)
    import uvicorn

    uvicorn.run(
        "tally.app:create_app_from_env", factory=True, host=args.host, port=args.port,
        workers=args.workers, loop="uvloop", http="httptools", log_config=None,
        access_log=False, timeout_graceful_shutdown=10,
    )


def _print_dev_banner(settings, host: str, port: int) -> None:
    from shared.auth import mint_token

    token = mint_token(
        settings.jwt_secret.get_secret_value(), project="demo", scopes=["ingest", "query", "admin"],
        audience=settings.jwt_audience, issuer=settings.jwt_issuer, ttl_seconds=30 * 86400, sub="dev",
    )
    base = f"http://{host}:{port}"
    print(
        f"\nTally on {base} (embedded Postgres under {settings.data_dir}/pg)\n\n"
        f"Dev token (project demo, scopes ingest query admin, 30 days):\n{token}\n\n"
        f"Post a batch:\n"
        f"curl -s {base}/v1/batch -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' "
        f"""-d '{{"batch":[{{"type":"track","messageId":"hello-1","userId":"u1","event":"Signed Up"}}]}}'\n""",
        file=sys.stderr,
        flush=True,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tally", description="Tally analytics event-ingestion API")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=_positive, default=1)
    serve.add_argument("--role", choices=["all", "ingest", "query"], default=None)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    migrate.set_defaults(func=cmd_migrate)

    distribute = sub.add_parser("distribute", help="on a Citus coordinator, distribute the tables by project")
    distribute.set_defaults(func=cmd_distribute)

    token = sub.add_parser(
        "token", help="print a signed JWT, or revoke one",
        usage="tally token --project P --scope S [--ttl 30d] [--sub cli]\n"
              "       tally token revoke <jti> --project P | tally token revoke <token>",
    )
    # `tally token --project ...` mints; `tally token revoke <jti>` revokes. An optional positional
    # action keeps the first form as it always was.
    token.add_argument("action", nargs="?", help=argparse.SUPPRESS)
    token.add_argument("target", nargs="?", help=argparse.SUPPRESS)
    token.add_argument("--project")
    token.add_argument("--scope", help='space-separated: "ingest query admin"')
    token.add_argument("--ttl", default="30d")
    token.add_argument("--sub", default="cli")
    token.add_argument("--origins", help="pages a browser may use the token from, e.g. https://shop.example.com")
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CommandError as exc:
        print(f"tally: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug or an environment we did not foresee: still one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"tally: error: unexpected {type(exc).__name__}: {first}".rstrip(": "), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
