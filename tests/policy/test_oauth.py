"""JWT access tokens: the verifier against a JWKS served on loopback, and the authenticator hook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from northstar.common import errors as E
from northstar.common.error_envelope import error_headers
from northstar.common.errors import IdentityMismatch
from northstar.common.identity import Transport
from northstar.policy.auth import Authenticator
from northstar.policy.oauth import JwtVerifier, token_scopes

ISSUER = "https://auth.example.test"
AUDIENCE = "https://mcp.example.test/mcp"


class Jwks:
    """A JWKS document served from a loopback HTTP server in a thread."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, kid: str, private_key: Any) -> None:
        algo = jwt.algorithms.RSAAlgorithm if isinstance(private_key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algo.to_jwk(private_key.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(rsa_key: rsa.RSAPrivateKey) -> Iterator[Jwks]:
    server = Jwks()
    server.publish("k1", rsa_key)
    yield server
    server.close()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "acme", "iat": now, "exp": now + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, kid: str = "k1", alg: str = "RS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def verifier(jwks: Jwks, **kw: Any) -> JwtVerifier:
    return JwtVerifier(ISSUER, AUDIENCE, jwks.url, **kw)


async def test_valid_token(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(jwks)
    ident = await v.verify(sign(rsa_key, aud=["other", AUDIENCE], scope="read northstar:admin"))
    assert (ident.tenant, ident.user, ident.is_admin) == ("acme", "alice", True)
    plain = await v.verify(sign(rsa_key))
    assert not plain.is_admin
    assert jwks.hits == 1  # the key set is cached


async def test_es256_token(jwks: Jwks) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.publish("e1", key)
    ident = await verifier(jwks).verify(sign(key, kid="e1", alg="ES256", scp=["northstar:admin"]))
    assert ident.is_admin


def _hs256(_: Any) -> str:
    return jwt.encode(claims(), "a-shared-secret-that-is-long-enough-for-hs256!", algorithm="HS256",
                      headers={"kid": "k1"})


def _alg_none(_: Any) -> str:
    return jwt.encode(claims(), "", algorithm="none", headers={"kid": "k1"})


def _bad_signature(key: Any) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return sign(other)  # kid k1, signed by a key that is not k1


def _tampered(key: Any) -> str:
    head, _, sig = sign(key).split(".")
    body = jwt.utils.base64url_encode(json.dumps(claims(sub="mallory")).encode()).decode()
    return f"{head}.{body}.{sig}"


@pytest.mark.parametrize(("make", "message"), [
    (lambda k: sign(k, iss="https://evil.example.test"), "issuer"),
    (lambda k: sign(k, aud="https://other.example.test/mcp"), "audience"),
    (lambda k: sign(k, aud=None), "aud"),
    (lambda k: sign(k, exp=int(time.time()) - 120), "expired"),
    (lambda k: sign(k, exp=None), "exp"),
    (lambda k: sign(k, nbf=int(time.time()) + 120), "not valid yet"),
    (_bad_signature, "signature"),
    (_tampered, "signature"),
    (_alg_none, "algorithm"),
    (_hs256, "algorithm"),
    (lambda k: sign(k, kid="unknown"), "key is not known"),
    (lambda k: sign(k, tenant=None), "tenant claim"),
    (lambda k: sign(k, sub=None), "sub claim"),
    (lambda k: sign(k, tenant=["acme"]), "tenant claim"),
    (lambda k: sign(k, tenant="acme/../x"), "not allowed"),
    (lambda k: sign(k, sub="alice\nbob"), "not allowed"),
    (lambda k: "not-a-jwt", "malformed"),
])
async def test_rejected_tokens(jwks: Jwks, rsa_key: rsa.RSAPrivateKey, make: Any, message: str) -> None:
    with pytest.raises(E.Unauthorized) as info:
        await verifier(jwks).verify(make(rsa_key))
    assert message in info.value.message
    assert "acme" not in info.value.message and "alice" not in info.value.message  # nothing of the token leaks


async def test_small_clock_skew_is_tolerated(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    ident = await verifier(jwks).verify(sign(rsa_key, nbf=int(time.time()) + 5, exp=int(time.time()) - 5))
    assert ident.user == "alice"


async def test_rs256_header_with_an_ec_key_is_refused(jwks: Jwks) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.publish("e1", key)
    token = sign(rsa.generate_private_key(public_exponent=65537, key_size=2048), kid="e1")
    with pytest.raises(E.Unauthorized, match="does not match its algorithm"):
        await verifier(jwks).verify(token)


async def test_key_rotation_and_rate_limited_refetch(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(jwks, min_refetch_interval_s=0.0)
    await v.verify(sign(rsa_key))
    assert jwks.hits == 1
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish("k2", new_key)
    ident = await v.verify(sign(new_key, kid="k2"))  # unknown kid: one refetch picks it up
    assert ident.user == "alice" and jwks.hits == 2
    await v.verify(sign(new_key, kid="k2"))
    assert jwks.hits == 2

    slow = verifier(jwks, min_refetch_interval_s=3600.0)
    await slow.verify(sign(rsa_key))
    for _ in range(5):  # made-up kids do not make a request each
        with pytest.raises(E.Unauthorized):
            await slow.verify(sign(rsa_key, kid="made-up"))
    assert jwks.hits == 3


async def test_jwks_unavailable_is_503(rsa_key: rsa.RSAPrivateKey) -> None:
    server = Jwks()
    url = server.url
    server.close()
    with pytest.raises(E.ServiceUnavailable):
        await JwtVerifier(ISSUER, AUDIENCE, url, fetch_timeout_s=5).verify(sign(rsa_key))


def test_scopes_and_metadata() -> None:
    assert token_scopes({"scope": "a b", "scp": ["c", 1]}) == {"a", "b", "c"}
    v = JwtVerifier(ISSUER, AUDIENCE, "http://127.0.0.1:1/jwks")
    assert v.metadata() == {
        "resource": AUDIENCE, "authorization_servers": [ISSUER], "bearer_methods_supported": ["header"],
        "scopes_supported": ["northstar:admin"], "resource_name": "northstar",
    }
    assert v.challenge == ('Bearer realm="northstar", '
                           'resource_metadata="https://mcp.example.test/.well-known/oauth-protected-resource"')


class NoKeys:
    async def verify(self, token: str) -> Any:
        raise E.Unauthorized("invalid or revoked API key")


async def test_authenticator_hook(jwks: Jwks, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(NoKeys(), trust_headers=False, oauth=verifier(jwks))  # type: ignore[arg-type]
    token = sign(rsa_key, scope="northstar:admin")
    ctx = await auth.authenticate([("authorization", f"Bearer {token}"), ("x-tenant-id", "acme")], Transport.HTTP)
    assert (ctx.tenant, ctx.user, ctx.is_admin, ctx.authenticated_by) == ("acme", "alice", True, "oauth")
    with pytest.raises(IdentityMismatch):
        await auth.authenticate([("authorization", f"Bearer {token}"), ("x-tenant-id", "other")], Transport.HTTP)
    for headers in ([], [("authorization", "Bearer garbage")], [("authorization", "Bearer nsk_x")]):
        with pytest.raises(E.Unauthorized) as info:
            await auth.authenticate(headers, Transport.HTTP)
        www = error_headers(info.value, "r")["WWW-Authenticate"]
        assert 'resource_metadata="https://mcp.example.test/.well-known/oauth-protected-resource"' in www

    plain = Authenticator(NoKeys(), trust_headers=False)  # type: ignore[arg-type]
    with pytest.raises(E.Unauthorized) as info:
        await plain.authenticate([("authorization", f"Bearer {token}")], Transport.HTTP)
    assert error_headers(info.value, "r")["WWW-Authenticate"] == 'Bearer realm="northstar"'
