"""OAuth 2.1 bearer tokens against a real gateway in ``api_key`` mode, with the issuer's JWKS
served on loopback: the protected resource metadata, 401 challenges that name it, JWT access
tokens over REST and Streamable HTTP (the SDK client), tenants from the claim, the admin scope,
and API keys still working next to tokens."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.clients import mcp_client
from tests.harness import GatewayProcess, northstar_cli
from tests.policy.test_oauth import AUDIENCE, ISSUER, Jwks, sign

METADATA = "https://mcp.example.test/.well-known/oauth-protected-resource"
CHALLENGE = f'Bearer realm="northstar", resource_metadata="{METADATA}"'
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
WRITE_ARGS = {"name": "note.txt", "mime_type": "text/plain", "content_text": "hi"}


class Env:
    def __init__(self, gw: GatewayProcess, key: rsa.RSAPrivateKey, api_key: str) -> None:
        self.gw, self.url, self.key, self.api_key = gw, gw.url, key, api_key

    def token(self, tenant: str, user: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {sign(self.key, tenant=tenant, sub=user, **claims)}"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = Jwks()
    jwks.publish("k1", key)
    data = tmp_path_factory.mktemp("oauth")
    done = northstar_cli(data, "keys", "create", "--tenant", "ops", "--user", "root")
    assert done.returncode == 0, done.stderr
    oauth = {"NORTHSTAR_AUTH_MODE": "api_key", "NORTHSTAR_OAUTH_ISSUER": ISSUER,
             "NORTHSTAR_OAUTH_AUDIENCE": AUDIENCE, "NORTHSTAR_OAUTH_JWKS_URL": jwks.url}
    try:
        with GatewayProcess(data, env=oauth) as gw:
            yield Env(gw, key, json.loads(done.stdout)["key"])
    finally:
        jwks.close()


def fresh() -> tuple[str, str]:
    return f"t-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"])
def test_protected_resource_metadata(env: Env, path: str) -> None:
    resp = httpx2.get(f"{env.url}{path}")  # no credential needed
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "resource": AUDIENCE, "authorization_servers": [ISSUER], "bearer_methods_supported": ["header"],
        "scopes_supported": ["northstar:admin"], "resource_name": "northstar",
    }


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Bearer a.b.c"}])
def test_401_names_the_resource_metadata(env: Env, headers: dict[str, str]) -> None:
    rest = httpx2.get(f"{env.url}/v1/tools", headers=headers)
    assert rest.status_code == 401 and rest.json()["error"]["code"] == "unauthorized"
    assert rest.headers["www-authenticate"] == CHALLENGE
    mcp = httpx2.post(f"{env.url}/mcp", json=PING, headers={**MCP_HEADERS, **headers})
    assert mcp.status_code == 401 and mcp.json()["error"]["data"]["code"] == "unauthorized"
    assert mcp.headers["www-authenticate"] == CHALLENGE
    sse = httpx2.get(f"{env.url}/sse", headers={"Accept": "text/event-stream", **headers})
    assert sse.status_code == 401 and sse.headers["www-authenticate"] == CHALLENGE


def test_expired_and_foreign_tokens_are_401(env: Env) -> None:
    for claims in ({"exp": 1}, {"aud": "https://other.example.test/mcp"}, {"iss": "https://evil.example.test"}):
        resp = httpx2.get(f"{env.url}/v1/tools", headers=env.token("acme", "alice", **claims))
        assert resp.status_code == 401, resp.text
        assert resp.headers["www-authenticate"] == CHALLENGE


def test_a_token_works_over_rest_and_tenants_follow_the_claim(env: Env) -> None:
    (tenant, user), (other, _) = fresh(), fresh()
    mine, theirs = env.token(tenant, user), env.token(other, user)  # the same user name in another tenant
    assert httpx2.get(f"{env.url}/v1/tools", headers=mine).status_code == 200
    grant = {"tenant": tenant, "user": user, "firearm": "firearm.media.write", "reason": "oauth test"}
    admin = env.token("ops", "root", scope="northstar:admin")
    assert httpx2.post(f"{env.url}/v1/firearms/grants", json=grant, headers=admin).status_code == 201
    call = f"{env.url}/v1/tools/media_v2.create_asset/call"
    wrote = httpx2.post(call, json={"arguments": WRITE_ARGS}, headers=mine)
    assert wrote.status_code == 200, wrote.text
    denied = httpx2.post(call, json={"arguments": WRITE_ARGS}, headers=theirs)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "firearm_required", denied.text
    # identity headers that contradict the token are refused, agreeing ones are fine
    spoof = httpx2.post(call, json={"arguments": WRITE_ARGS}, headers={**theirs, "X-Tenant-Id": tenant})
    assert spoof.status_code == 403 and spoof.json()["error"]["code"] == "identity_mismatch"
    agree = httpx2.get(f"{env.url}/v1/tools", headers={**mine, "X-Tenant-Id": tenant, "X-User-Id": user})
    assert agree.status_code == 200


def test_the_admin_scope_may_change_policy(env: Env) -> None:
    tenant, user = fresh()
    body = {"firearm": "firearm.x.y"}
    plain = httpx2.put(f"{env.url}/v1/firearms/bindings/x", json=body, headers=env.token(tenant, user))
    assert plain.status_code == 403 and plain.json()["error"]["code"] == "admin_required"
    admin = env.token(tenant, user, scope="openid northstar:admin")
    resp = httpx2.put(f"{env.url}/v1/firearms/bindings/x", json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    assert resp.json()["firearm"] == "firearm.x.y"


def test_api_keys_still_work_next_to_tokens(env: Env) -> None:
    resp = httpx2.get(f"{env.url}/v1/tools", headers={"Authorization": f"Bearer {env.api_key}"})
    assert resp.status_code == 200, resp.text


async def test_a_token_works_over_streamable_http(env: Env) -> None:
    tenant, user = fresh()
    async with mcp_client("streamable-2025", env.url, env.gw.data_dir, tenant, user,
                          headers=env.token(tenant, user)) as client:
        assert "echo__ping" in {t.name for t in (await client.list_tools()).tools}
        pong = await client.call_tool("echo__ping", {"message": "oauth"})
        assert not pong.is_error and pong.structured_content["message"] == "oauth"
    audit = httpx2.get(f"{env.url}/v1/audit", params={"tenant": tenant, "limit": "100"},
                       headers=env.token("ops", "auditor", scope="northstar:admin"))
    assert audit.status_code == 200, audit.text
    assert {e["user"] for e in audit.json()["entries"] if e.get("event") == "decision"} == {user}
