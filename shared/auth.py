"""JWT authentication: one verifier per app, one dependency per permission.

Tokens arrive as `Authorization: Bearer <jwt>` or as Segment-style write keys,
`Authorization: Basic base64(<jwt>:)`. Algorithms are pinned to the configured key family and
never read from the token header, so `alg: none`, an HS256 token signed with a public key, and
an unknown `kid` are all refused. `exp` is required (pyjwt checks time claims only when present).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import HTTPBasic, HTTPBearer
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.errors import DatabaseUnavailable, Forbidden, OriginNotAllowed, Unauthorized
from shared.middleware import log_project
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.services import Services

SCOPES = ("ingest", "query", "admin")
# Every key and index starts with project_id; a bound keeps them small.
MAX_PROJECT_LENGTH = 64
ASYMMETRIC_ALGORITHMS = ["RS256", "ES256"]


@dataclass(frozen=True, slots=True)
class Principal:
    project: str
    sub: str
    scopes: frozenset[str]
    jti: str | None = None
    # The pages (origins) a browser may use this token from; None: any.
    origins: frozenset[str] | None = None


VERIFIED_CACHE_SIZE = 10_000


class TokenVerifier:
    def __init__(self, settings: Settings):
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_seconds
        self.secret = settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else None
        self.public_keys = load_public_keys(settings.jwt_public_keys) if settings.jwt_public_keys else {}
        if self.secret is None and not self.public_keys:
            raise ValueError("no JWT secret or public key configured (TALLY_JWT_SECRET or TALLY_JWT_PUBLIC_KEYS)")
        # token -> (principal, verified until). An SDK sends the same token with every batch, and
        # verifying a signature costs more than the rest of authorizing; the exact token string
        # verified once stays valid until its exp (plus leeway). Revocation is checked per request
        # elsewhere, so caching never outlives a revoke.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def _key_for(self, token: str) -> tuple[Any, list[str]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed token") from exc
        alg = header.get("alg")
        if alg == "HS256" and self.secret is not None:
            return self.secret, ["HS256"]
        if alg in ASYMMETRIC_ALGORITHMS and self.public_keys:
            kid = header.get("kid")
            if not isinstance(kid, str) and len(self.public_keys) == 1 and None in self.public_keys:
                key, key_alg = self.public_keys[None]
            elif isinstance(kid, str) and kid in self.public_keys:
                key, key_alg = self.public_keys[kid]
            else:
                raise Unauthorized("unknown key id (kid)")
            return key, [key_alg]
        raise Unauthorized("token algorithm not accepted")

    def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached[1]:
                return cached[0]
            del self._verified[token]
        principal, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            # Bounded: the oldest entry goes (dicts keep insertion order); an evicted token is
            # verified once more when it comes back, rather than every token at once.
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, expires + self.leeway)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        key, algorithms = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "aud"], "strict_aud": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthorized("token not yet valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized("wrong audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized("wrong issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"missing claim {exc.claim}") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthorized("bad signature") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        project = claims.get("project")
        scope = claims.get("scope")
        if not valid_project(project):
            raise Unauthorized(f"missing claim project, or not a string of 1 to {MAX_PROJECT_LENGTH} characters")
        if not isinstance(scope, str):
            raise Unauthorized("missing claim scope")
        jti = claims.get("jti")
        origins = claims.get("origins")
        if origins is not None and not (isinstance(origins, list) and all(isinstance(o, str) for o in origins)):
            raise Unauthorized("claim origins must be a list of origins (https://app.example.com)")
        principal = Principal(
            project, claims["sub"], frozenset(scope.split()), jti if isinstance(jti, str) else None,
            None if origins is None else frozenset(origins),
        )
        return principal, float(claims["exp"])


def valid_project(project: object) -> bool:
    return isinstance(project, str) and 0 < len(project) <= MAX_PROJECT_LENGTH


def load_public_keys(path: Path) -> dict[str | None, tuple[Any, str]]:
    """Read a PEM public key (no kid) or a JWKS file (keys by kid) into {kid: (key, alg)}.

    Raises ValueError naming the file for anything unusable, so `tally serve` can refuse to start
    with one line rather than every worker failing later: an RSA key verifies RS256 only, an EC
    key must be on P-256 and verifies ES256 only.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            jwks = json.loads(text).get("keys", [])
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a JWKS document") from exc
        keys: dict[str | None, tuple[Any, str]] = {}
        for jwk in jwks:
            kid = jwk.get("kid")
            try:
                if jwk.get("kty") == "RSA":
                    keys[kid] = (RSAAlgorithm.from_jwk(jwk), "RS256")
                elif jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
                    keys[kid] = (ECAlgorithm.from_jwk(jwk), "ES256")
                else:
                    raise ValueError(f"{path}: key {kid!r}: only RSA and P-256 EC keys are supported")
            except jwt.InvalidKeyError as exc:
                raise ValueError(f"{path}: key {kid!r} is not a valid JWK") from exc
        if not keys:
            raise ValueError(f"{path}: the JWKS holds no keys")
        return keys
    key = load_pem_public_key(text.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return {None: (key, "RS256")}
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return {None: (key, "ES256")}
    raise ValueError(f"{path}: only RSA and P-256 EC public keys are supported")


def bearer_token(authorization: str | None) -> str:
    """The JWT from a Bearer header, or from a Basic header whose username is the JWT."""
    if not authorization:
        raise Unauthorized("missing Authorization header", missing=True)
    scheme, _, value = authorization.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed Basic credentials") from exc
        username = decoded.partition(":")[0]
        if username:
            return username
    raise Unauthorized("expected Authorization: Bearer <token> or Basic <write key>")


def authorize(request: Request, scope: str) -> Principal:
    """The request's principal when its token (Authorization header) is valid, not revoked, holds
    `scope` and may be used from the request's origin; else 401/403."""
    services: Services = request.app.state.services
    principal = authenticate(services, bearer_token(request.headers.get("authorization")))
    log_project(request.scope, principal.project)
    permit(principal, scope, request.headers.get("origin"))
    return principal


def write_key_authorizer(request: Request, scope: str) -> Callable[[object], Principal]:
    """For endpoints browser SDKs post to: the key may be the Authorization header, the body's
    top-level `writeKey`, or a `writeKey` query parameter (beacons cannot send headers), in that
    order of precedence. Returns a function that takes the body's `writeKey` (None when absent)
    and gives the principal. A header is checked at once, before the body is read; a body key
    that disagrees with it, or with the query's, is 401."""
    services: Services = request.app.state.services
    origin = request.headers.get("origin")
    header = request.headers.get("authorization")
    if header is not None:
        token = bearer_token(header)
        principal = authenticate(services, token)
        log_project(request.scope, principal.project)
        permit(principal, scope, origin)

        def agreeing(body_key: object) -> Principal:
            if body_key is not None and body_key != token:
                raise Unauthorized("the body's writeKey is not the token of the Authorization header")
            return principal

        return agreeing
    query_key = request.query_params.get("writeKey")

    def resolved(body_key: object) -> Principal:
        if body_key is not None and not isinstance(body_key, str):
            raise Unauthorized("writeKey must be a string: a Tally token")
        if body_key and query_key and body_key != query_key:
            raise Unauthorized("the body's writeKey is not the writeKey of the query")
        token = body_key or query_key
        if not token:
            raise Unauthorized(
                "no credentials: send Authorization: Bearer <token>, a writeKey in the body, or ?writeKey=", missing=True
            )
        principal = authenticate(services, token)
        log_project(request.scope, principal.project)
        permit(principal, scope, origin)
        return principal

    return resolved


def authenticate(services: Services, token: str) -> Principal:
    """The principal of a valid token that is not revoked; else 401 (503 until revocations load)."""
    principal = services.verifier.verify(token)
    # An in-memory set, reloaded each second by the app (shared.revocation): no query per request.
    if not services.revoked.loaded:
        raise DatabaseUnavailable("the token revocation list is not loaded yet")
    if services.revoked.is_revoked(principal.project, principal.jti):
        raise Unauthorized("token revoked")
    return principal


def permit(principal: Principal, scope: str, origin: str | None) -> None:
    """403 unless the token holds `scope` and, sent by a page, names that page's origin (when it
    names any)."""
    if scope not in principal.scopes:
        # RFC 6750 section 3.1: name the scope that would have been enough.
        challenge = f'Bearer realm="tally", error="insufficient_scope", scope="{scope}"'
        raise Forbidden(f"this endpoint needs scope '{scope}'", headers={"WWW-Authenticate": challenge})
    if origin is not None and principal.origins is not None and origin not in principal.origins:
        raise OriginNotAllowed(f"this token may not be used from {origin[:100]}; its origins claim names the pages it may")


class _Documented:
    """A security scheme for the OpenAPI document only: `authorize` reads the header itself, so
    both schemes accept the same tokens and fail with the same answers."""

    async def __call__(self, request: Request) -> None:
        return None


class BearerScheme(_Documented, HTTPBearer):
    pass


class WriteKeyScheme(_Documented, HTTPBasic):
    pass


BEARER = BearerScheme(
    bearerFormat="JWT", scheme_name="bearer", auto_error=False,
    description="A Tally token (`tally token`): `Authorization: Bearer <jwt>`.",
)
WRITE_KEY = WriteKeyScheme(
    scheme_name="writeKey", auto_error=False,
    description="A Segment-style write key: the same token as the Basic username, the password empty.",
)


def require(scope: str):
    # `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, and a
    # thread hop per request costs more than verifying the token itself. The two schemes are
    # alternatives in the document (either is enough).
    async def dependency(
        request: Request,
        _bearer: Annotated[None, Security(BEARER)],
        _write_key: Annotated[None, Security(WRITE_KEY)],
    ) -> Principal:
        return authorize(request, scope)

    dependency.__name__ = f"require_{scope}"
    return dependency


IngestWriter = Annotated[Principal, Depends(require("ingest"))]
QueryReader = Annotated[Principal, Depends(require("query"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def mint_token(
    secret: str,
    *,
    project: str,
    scopes: list[str] | str,
    audience: str = "tally",
    issuer: str | None = None,
    ttl_seconds: int = 3600,
    sub: str = "dev",
    origins: list[str] | None = None,
) -> str:
    """An HS256 token with a unique jti, as `tally token` prints it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "project": project,
        "scope": scopes if isinstance(scopes, str) else " ".join(scopes),
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    if issuer:
        claims["iss"] = issuer
    if origins is not None:
        claims["origins"] = origins
    return jwt.encode(claims, secret, algorithm="HS256")


def new_secret() -> str:
    return secrets.token_urlsafe(48)
