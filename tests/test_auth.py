"""The auth contract over HTTP: every refusal reason, the 401/403 split, Bearer and Basic, HS256 and
RS256/ES256 from a JWKS file or a PEM file. Keys are generated here; nothing is mocked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.auth import IngestWriter
from shared.settings import Settings
from tally.app import create_app
from tests.factories import SECRET, make_batch, token_for

ISSUER = "https://auth.tally.test"
DROP = object()


def claims(**overrides) -> dict:
    now = int(time.time())
    body = {
        "sub": "svc", "project": "p_auth", "scope": "ingest", "aud": "tally", "iss": ISSUER,
        "iat": now, "nbf": now, "exp": now + 600, "jti": "j1",
    }
    for name, value in overrides.items():
        if value is DROP:
            body.pop(name)
        else:
            body[name] = value
    return body


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, body: dict, hmac_key: bytes | None) -> str:
    """A token pyjwt refuses to build: alg none, or HS256 keyed with a public key's PEM."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(body).encode())
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest() if hmac_key else b""
    return signing_input + "." + b64url(signature)


def hs(body: dict, secret: str = SECRET) -> str:
    return jwt.encode(body, secret, algorithm="HS256")


def with_whoami(app: FastAPI) -> FastAPI:
    """A test-only route guarded by the real ingest permission, answering who the token is."""

    @app.get("/test/whoami")
    async def whoami(principal: IngestWriter) -> dict:
        return {"project": principal.project, "sub": principal.sub, "scopes": sorted(principal.scopes)}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith('Bearer realm="tally"')
    assert response.json()["code"] == "invalid_token"
    assert reason in response.json()["detail"]


# --- HS256 with a secret, issuer configured ------------------------------------------------------


@pytest.fixture(scope="module")
def hs_client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(_env_file=None, database_url=database_url, jwt_secret=SECRET, jwt_issuer=ISSUER)
    with TestClient(with_whoami(create_app(settings)), raise_server_exceptions=False) as client:
        yield client


def test_valid_bearer_token_yields_its_principal(hs_client):
    response = hs_client.get("/test/whoami", headers=bearer(hs(claims(scope="query ingest"))))
    assert response.status_code == 200, response.text
    assert response.json() == {"project": "p_auth", "sub": "svc", "scopes": ["ingest", "query"]}


def test_basic_write_key_form_is_accepted(hs_client):
    write_key = base64.b64encode(f"{hs(claims())}:".encode()).decode()
    response = hs_client.get("/test/whoami", headers={"Authorization": f"Basic {write_key}"})
    assert response.status_code == 200, response.text
    assert response.json()["project"] == "p_auth"


def test_missing_header_is_401_with_a_challenge_without_error_code(hs_client):
    response = hs_client.get("/test/whoami")
    assert_refused(response, "missing Authorization header")
    # RFC 6750 3.1: no error code when the request carried no credentials at all.
    assert response.headers["www-authenticate"] == 'Bearer realm="tally"'


NOW = int(time.time())
REFUSALS: dict[str, tuple[Callable[[], str], str]] = {
    "malformed bearer": (lambda: "Bearer not.a.jwt", "malformed token"),
    "unknown scheme": (lambda: "Token " + hs(claims()), "expected Authorization"),
    "malformed basic": (lambda: "Basic %%%not-base64", "malformed Basic credentials"),
    "basic without username": (lambda: "Basic " + base64.b64encode(b":x").decode(), "expected Authorization"),
    "alg none": (lambda: "Bearer " + forge({"alg": "none", "typ": "JWT"}, claims(), None), "algorithm not accepted"),
    "wrong signature": (lambda: "Bearer " + hs(claims(), "another-secret-of-enough-length-0123456789"), "bad signature"),
    "expired": (lambda: "Bearer " + hs(claims(exp=NOW - 3600)), "expired"),
    "nbf in future": (lambda: "Bearer " + hs(claims(nbf=NOW + 3600)), "not yet valid"),
    "iat in future": (lambda: "Bearer " + hs(claims(iat=NOW + 3600)), "not yet valid"),
    "wrong aud": (lambda: "Bearer " + hs(claims(aud="other")), "wrong audience"),
    "missing aud": (lambda: "Bearer " + hs(claims(aud=DROP)), "missing claim aud"),
    "wrong iss": (lambda: "Bearer " + hs(claims(iss="https://evil.test")), "wrong issuer"),
    "missing iss": (lambda: "Bearer " + hs(claims(iss=DROP)), "missing claim iss"),
    "missing exp": (lambda: "Bearer " + hs(claims(exp=DROP)), "missing claim exp"),
    "missing sub": (lambda: "Bearer " + hs(claims(sub=DROP)), "missing claim sub"),
    "missing project": (lambda: "Bearer " + hs(claims(project=DROP)), "missing claim project"),
    "empty project": (lambda: "Bearer " + hs(claims(project="")), "missing claim project"),
    "overlong project": (lambda: "Bearer " + hs(claims(project="p" * 65)), "missing claim project"),
    "non-string project": (lambda: "Bearer " + hs(claims(project=7)), "missing claim project"),
    "missing scope": (lambda: "Bearer " + hs(claims(scope=DROP)), "missing claim scope"),
    "unknown kid on HS only": (lambda: "Bearer " + forge({"alg": "RS256", "kid": "k9"}, claims(), None), "algorithm not accepted"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_is_401_naming_the_reason(hs_client, case):
    header, reason = REFUSALS[case]
    assert_refused(hs_client.get("/test/whoami", headers={"Authorization": header()}), reason)


def test_time_claims_within_leeway_are_accepted(hs_client):
    now = int(time.time())
    token = hs(claims(nbf=now + 10, iat=now + 10, exp=now - 10))  # leeway is 30 s by default
    assert hs_client.get("/test/whoami", headers=bearer(token)).status_code == 200


def test_valid_token_without_the_scope_is_403_insufficient_scope(hs_client):
    response = hs_client.get("/test/whoami", headers=bearer(hs(claims(scope="query admin"))))
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "insufficient_scope"
    assert 'error="insufficient_scope", scope="ingest"' in response.headers["www-authenticate"]


def test_ingest_endpoint_is_guarded_and_takes_a_segment_write_key(client, project):
    assert client.post("/v1/batch", json=make_batch(1)).status_code == 401
    query_only = {"Authorization": f"Bearer {token_for(project, 'query')}"}
    assert client.post("/v1/batch", json=make_batch(1), headers=query_only).status_code == 403
    write_key = base64.b64encode(f"{token_for(project, 'ingest')}:".encode()).decode()
    response = client.post("/v1/batch", json=make_batch(1), headers={"Authorization": f"Basic {write_key}"})
    assert response.status_code == 200, response.text


# --- RS256 / ES256 from public keys only ---------------------------------------------------------


def pem(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys() -> dict:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "rsa_other": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def public_key_client(database_url: str, path: Path) -> TestClient:
    # role ingest: the whoami route needs only the ingest permission. Every role pages with
    # signed cursors (the schema list is served with ingest), and public keys cannot sign them.
    settings = Settings(
        _env_file=None, database_url=database_url, jwt_secret=None, jwt_public_keys=path, role="ingest",
        cursor_secret="c" * 32,
    )
    return TestClient(with_whoami(create_app(settings)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def jwks_client(database_url, keys, tmp_path_factory) -> Iterator[TestClient]:
    rsa_jwk = RSAAlgorithm.to_jwk(keys["rsa"].public_key(), as_dict=True) | {"kid": "rsa-1", "use": "sig"}
    ec_jwk = ECAlgorithm.to_jwk(keys["ec"].public_key(), as_dict=True) | {"kid": "ec-1", "use": "sig"}
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
    with public_key_client(database_url, path) as client:
        yield client


def signed(private_key, alg: str, kid: str | None = None, **overrides) -> str:
    return jwt.encode(claims(iss=DROP, **overrides), private_key, algorithm=alg, headers={"kid": kid} if kid else None)


def test_jwks_accepts_rs256_and_es256_chosen_by_kid(jwks_client, keys):
    rs = jwks_client.get("/test/whoami", headers=bearer(signed(keys["rsa"], "RS256", "rsa-1", project="p_rs")))
    es = jwks_client.get("/test/whoami", headers=bearer(signed(keys["ec"], "ES256", "ec-1", project="p_es")))
    assert (rs.status_code, rs.json()["project"]) == (200, "p_rs")
    assert (es.status_code, es.json()["project"]) == (200, "p_es")


def test_jwks_refuses_an_unknown_kid(jwks_client, keys):
    response = jwks_client.get("/test/whoami", headers=bearer(signed(keys["rsa_other"], "RS256", "rsa-2")))
    assert_refused(response, "unknown key id")


def test_jwks_refuses_a_token_without_kid(jwks_client, keys):
    assert_refused(jwks_client.get("/test/whoami", headers=bearer(signed(keys["rsa"], "RS256"))), "unknown key id")


def test_jwks_refuses_a_known_kid_signed_by_another_key(jwks_client, keys):
    response = jwks_client.get("/test/whoami", headers=bearer(signed(keys["rsa_other"], "RS256", "rsa-1")))
    assert_refused(response, "bad signature")


def test_jwks_refuses_an_algorithm_other_than_the_keys(jwks_client, keys):
    # The kid names the EC key; an RS256 token must not be checked against it as anything else.
    response = jwks_client.get("/test/whoami", headers=bearer(signed(keys["rsa"], "RS256", "ec-1")))
    assert_refused(response, "invalid token")


def test_public_keys_only_refuse_hs256_signed_with_the_public_key(jwks_client, keys):
    public_pem = pem(keys["rsa"].public_key())
    token = forge({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(iss=DROP), public_pem)
    assert_refused(jwks_client.get("/test/whoami", headers=bearer(token)), "algorithm not accepted")


def test_public_keys_only_refuse_alg_none(jwks_client):
    token = forge({"alg": "none", "kid": "rsa-1"}, claims(iss=DROP), None)
    assert_refused(jwks_client.get("/test/whoami", headers=bearer(token)), "algorithm not accepted")


@pytest.mark.parametrize("kind,alg", [("rsa", "RS256"), ("ec", "ES256")])
def test_pem_file_verifies_its_algorithm_and_refuses_hs256_keyed_with_it(database_url, keys, tmp_path, kind, alg):
    path = tmp_path / f"{kind}.pem"
    public_pem = pem(keys[kind].public_key())
    path.write_bytes(public_pem)
    with public_key_client(database_url, path) as client:
        good = client.get("/test/whoami", headers=bearer(signed(keys[kind], alg, project="p_pem")))
        assert (good.status_code, good.json()["project"]) == (200, "p_pem")
        forged = forge({"alg": "HS256", "typ": "JWT"}, claims(iss=DROP), public_pem)
        assert_refused(client.get("/test/whoami", headers=bearer(forged)), "algorithm not accepted")
        other_kid = client.get("/test/whoami", headers=bearer(signed(keys[kind], alg, "some-kid")))
        assert_refused(other_kid, "unknown key id")



def test_a_verified_token_is_refused_once_it_expires_even_though_verification_is_cached():
    from shared.auth import TokenVerifier
    from shared.errors import Unauthorized

    verifier = TokenVerifier(Settings(_env_file=None, jwt_secret=SECRET, jwt_leeway_seconds=0))
    token = jwt.encode(
        {"sub": "s", "project": "p", "scope": "ingest", "aud": "tally", "exp": time.time() + 1.0},
        SECRET, algorithm="HS256",
    )
    assert verifier.verify(token).project == "p"
    assert verifier.verify(token).project == "p"  # served from the cache
    time.sleep(1.1)
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(token)


def test_a_token_with_a_tampered_signature_is_refused_though_the_genuine_one_is_cached():
    from shared.auth import TokenVerifier
    from shared.errors import Unauthorized

    verifier = TokenVerifier(Settings(_env_file=None, jwt_secret=SECRET))
    token = token_for("p")
    verifier.verify(token)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthorized):
        verifier.verify(tampered)
