"""Authentication against a real gateway in ``api_key`` mode: 401 without a valid key on every
HTTP door, keys working over REST, Streamable HTTP and SSE, identity headers that contradict
the key, revocation, sessions bound to their principal, and keys never leaking."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import trio

from tests.e2e.clients import error_of, mcp_client
from tests.harness import GatewayProcess, northstar_cli

ENVELOPE_KEYS = {"code", "message", "http_status", "request_id", "details"}
PROTOCOL = "2025-06-18"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
WRITE_ARGS = {"name": "note.txt", "mime_type": "text/plain", "content_text": "hi"}


class Key:
    def __init__(self, created: dict[str, Any]) -> None:
        self.secret: str = created["key"]
        self.key_id: str = created["key_id"]
        self.tenant: str = created["tenant"]
        self.user: str = created["user"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


class Env:
    def __init__(self, gw: GatewayProcess, root: Key) -> None:
        self.gw, self.url, self.root = gw, gw.url, root
        self.secrets: list[str] = [root.secret]

    def new_key(self, *, admin: bool = False) -> Key:
        body = {"tenant": f"t-{uuid.uuid4().hex[:8]}", "user": f"u-{uuid.uuid4().hex[:8]}", "admin": admin}
        resp = httpx2.post(f"{self.url}/v1/keys", json=body, headers=self.root.auth)
        assert resp.status_code == 201, resp.text
        key = Key(resp.json())
        self.secrets.append(key.secret)
        return key


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data = tmp_path_factory.mktemp("auth")
    done = northstar_cli(data, "keys", "create", "--tenant", "ops", "--user", "root", "--admin")
    assert done.returncode == 0, done.stderr
    root = Key(json.loads(done.stdout))
    with GatewayProcess(data, env={"NORTHSTAR_AUTH_MODE": "api_key"}) as gw:
        yield Env(gw, root)


def assert_envelope(resp: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS
    assert (body["error"]["code"], body["error"]["http_status"]) == (code, status)
    return dict(body["error"])


def assert_jsonrpc_error(resp: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert isinstance(body["error"]["code"], int) and body["error"]["message"]
    data = body["error"]["data"]
    assert (data["code"], data["http_status"]) == (code, status)
    return dict(data)


def initialize(url: str, headers: dict[str, str]) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    return httpx2.post(f"{url}/mcp", json=body, headers={**MCP_HEADERS, **headers}, timeout=30)


def open_session(url: str, key: Key) -> str:
    resp = initialize(url, key.auth)
    assert resp.status_code == 200, resp.text
    session = resp.headers["mcp-session-id"]
    done = in_session(url, key.auth, session, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert done.status_code == 202, done.text
    return session


def in_session(url: str, headers: dict[str, str], session: str, msg: dict[str, Any]) -> httpx2.Response:
    hdrs = {**MCP_HEADERS, **headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL}
    return httpx2.post(f"{url}/mcp", json=msg, headers=hdrs, timeout=30)


def sse_result(resp: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response sent as JSON or as one SSE event."""
    if resp.headers.get("content-type", "").startswith("application/json"):
        return dict(resp.json())
    data = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    return dict(json.loads(data[-1]))


LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
PING = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo__ping", "arguments": {}}}


# -- no key needed ----------------------------------------------------------------------------------
def test_health_needs_no_key(env: Env) -> None:
    resp = httpx2.get(f"{env.url}/health")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


# -- 401 ----------------------------------------------------------------------------------------------
BAD_CREDENTIALS = [
    {},
    {"X-User-Id": "root", "X-Tenant-Id": "ops"},  # identity headers alone are not trusted
    {"Authorization": "Bearer not-a-key"},
    {"Authorization": f"Bearer nsk_{'0' * 16}_{'A' * 43}"},
    {"Authorization": "Basic cm9vdDpyb290"},
    {"Authorization": "Bearer"},
]


@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
def test_rest_without_a_valid_key_is_401(env: Env, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/v1/tools"), ("POST", "/v1/tools/echo.ping/call"), ("GET", "/v1/audit")):
        resp = httpx2.request(method, f"{env.url}{path}", headers=headers, json={} if method == "POST" else None)
        assert_envelope(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"].startswith("Bearer")


def test_a_real_key_id_with_a_wrong_secret_is_401(env: Env) -> None:
    forged = f"nsk_{env.root.key_id}_{'A' * 43}"
    assert_envelope(httpx2.get(f"{env.url}/v1/tools", headers={"Authorization": f"Bearer {forged}"}), 401,
                    "unauthorized")


@pytest.mark.parametrize("headers", BAD_CREDENTIALS[:4])
def test_mcp_doors_without_a_valid_key_are_401(env: Env, headers: dict[str, str]) -> None:
    assert_jsonrpc_error(initialize(env.url, headers), 401, "unauthorized")
    assert_jsonrpc_error(httpx2.get(f"{env.url}/sse", headers=headers), 401, "unauthorized")
    resp = httpx2.post(f"{env.url}/messages/?session_id={uuid.uuid4().hex}", json=LIST, headers=headers)
    assert_jsonrpc_error(resp, 401, "unauthorized")


# -- a valid key --------------------------------------------------------------------------------------
def test_a_valid_key_works_over_rest(env: Env) -> None:
    key = env.new_key()
    assert httpx2.get(f"{env.url}/v1/tools", headers=key.auth).status_code == 200
    rid = f"req-{uuid.uuid4().hex}"
    resp = httpx2.post(f"{env.url}/v1/tools/echo.ping/call", json={"arguments": {"message": "k"}},
                       headers={**key.auth, "X-Request-Id": rid})
    assert resp.status_code == 200 and resp.json()["output"]["message"] == "k"
    denied = httpx2.post(f"{env.url}/v1/tools/media_v2.create_asset/call", json={"arguments": WRITE_ARGS},
                         headers=key.auth)
    assert_envelope(denied, 403, "firearm_required")
    [rec] = [e for e in audit(env, tenant=key.tenant) if e.get("request_id") == rid]
    assert (rec["tenant"], rec["user"], rec["transport"]) == (key.tenant, key.user, "http")


@pytest.mark.parametrize("kind", ["sse", "streamable-2025", "streamable-2026"])
async def test_a_valid_key_works_over_mcp(env: Env, kind: str) -> None:
    key = await trio.to_thread.run_sync(env.new_key)
    with trio.fail_after(60):
        async with mcp_client(kind, env.url, env.gw.data_dir, key.tenant, key.user, headers=key.auth) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo__ping" in names
            pong = await client.call_tool("echo__ping", {"message": kind})
            assert not pong.is_error and pong.structured_content["message"] == kind
            denied = await client.call_tool("media_v2__create_asset", WRITE_ARGS)
            assert error_of(denied)["code"] == "firearm_required"
    entries = await trio.to_thread.run_sync(lambda: audit(env, tenant=key.tenant))
    assert {(e["user"], e["decision"]) for e in entries if e.get("event") == "decision"} == {
        (key.user, "allow"), (key.user, "deny")}


# -- identity headers contradicting the key -------------------------------------------------------------
@pytest.mark.parametrize("header", ["X-Tenant-Id", "X-User-Id"])
def test_identity_headers_contradicting_the_key_are_403(env: Env, header: str) -> None:
    key = env.new_key()
    wrong = {header: "root" if header == "X-User-Id" else "ops"}
    err = assert_envelope(httpx2.get(f"{env.url}/v1/tools", headers={**key.auth, **wrong}), 403,
                          "identity_mismatch")
    assert err["details"]["header"] == header.lower()
    data = assert_jsonrpc_error(initialize(env.url, {**key.auth, **wrong}), 403, "identity_mismatch")
    assert data["details"]["header"] == header.lower()
    agreeing = {"X-Tenant-Id": key.tenant, "X-User-Id": key.user}
    assert httpx2.get(f"{env.url}/v1/tools", headers={**key.auth, **agreeing}).status_code == 200


def test_a_non_admin_key_cannot_change_policy(env: Env) -> None:
    key = env.new_key()
    put = httpx2.put(f"{env.url}/v1/firearms/bindings/x", json={"firearm": "firearm.x.y"}, headers=key.auth)
    assert_envelope(put, 403, "admin_required")
    grant = {"tenant": key.tenant, "user": key.user, "firearm": "firearm.media.write"}
    assert_envelope(httpx2.post(f"{env.url}/v1/firearms/grants", json=grant, headers=key.auth), 403,
                    "admin_required")
    assert_envelope(httpx2.post(f"{env.url}/v1/keys", json={"tenant": "a", "user": "b", "admin": True},
                                headers=key.auth), 403, "admin_required")
    # claiming to be the admin user does not help: the key says who you are
    assert_envelope(httpx2.put(f"{env.url}/v1/firearms/bindings/x", json={"firearm": "firearm.x.y"},
                               headers={**key.auth, "X-User-Id": "root", "X-Tenant-Id": "ops"}),
                    403, "identity_mismatch")
    # the admin key can, and its grant is what lets this key write
    assert httpx2.post(f"{env.url}/v1/firearms/grants", json=grant, headers=env.root.auth).status_code == 201
    wrote = httpx2.post(f"{env.url}/v1/tools/media_v2.create_asset/call", json={"arguments": WRITE_ARGS},
                        headers=key.auth)
    assert wrote.status_code == 200, wrote.text


# -- revocation ----------------------------------------------------------------------------------------
def test_a_revoked_key_is_401_on_the_next_request(env: Env) -> None:
    key = env.new_key()
    session = open_session(env.url, key)
    assert in_session(env.url, key.auth, session, LIST).status_code == 200
    assert httpx2.get(f"{env.url}/v1/tools", headers=key.auth).status_code == 200
    revoked = httpx2.delete(f"{env.url}/v1/keys/{key.key_id}", headers=env.root.auth)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert_envelope(httpx2.get(f"{env.url}/v1/tools", headers=key.auth), 401, "unauthorized")
    assert_jsonrpc_error(in_session(env.url, key.auth, session, PING), 401, "unauthorized")
    assert_jsonrpc_error(initialize(env.url, key.auth), 401, "unauthorized")
    assert_envelope(httpx2.delete(f"{env.url}/v1/keys/{key.key_id}", headers=env.root.auth), 404, "not_found")


async def test_a_key_revoked_with_the_cli_stops_working_on_the_running_gateway(env: Env) -> None:
    done = await trio.to_thread.run_sync(
        northstar_cli, env.gw.data_dir, "keys", "create", "--tenant", "cli", "--user", "bob")
    assert done.returncode == 0, done.stderr
    key = Key(json.loads(done.stdout))
    env.secrets.append(key.secret)

    def status() -> int:
        return httpx2.get(f"{env.url}/v1/tools", headers=key.auth).status_code

    assert await trio.to_thread.run_sync(status) == 200  # a key made by another process works at once
    done = await trio.to_thread.run_sync(northstar_cli, env.gw.data_dir, "keys", "revoke", key.key_id)
    assert done.returncode == 0, done.stderr
    with trio.fail_after(10):  # the gateway caches a key lookup for at most a second
        while await trio.to_thread.run_sync(status) != 401:
            await trio.sleep(0.1)


# -- sessions belong to their principal -------------------------------------------------------------------
def test_a_streamable_session_answers_404_to_another_key(env: Env) -> None:
    alice, mallory = env.new_key(), env.new_key()
    session = open_session(env.url, alice)
    for msg in (LIST, PING):
        resp = in_session(env.url, mallory.auth, session, msg)
        assert resp.status_code == 404, resp.text
        assert alice.user not in resp.text and "echo" not in resp.text
    assert "result" in sse_result(in_session(env.url, alice.auth, session, LIST))
    pong = sse_result(in_session(env.url, alice.auth, session, PING))
    assert pong["result"]["isError"] is False


async def test_an_sse_session_answers_404_to_another_key(env: Env) -> None:
    alice, mallory = await trio.to_thread.run_sync(env.new_key), await trio.to_thread.run_sync(env.new_key)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    with trio.fail_after(30):
        async with httpx2.AsyncClient(timeout=30) as http, http.stream(
            "GET", f"{env.url}/sse", headers=alice.auth
        ) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            endpoint = None
            async for line in lines:
                if line.startswith("data:") and "session_id=" in line:
                    endpoint = line[5:].strip()
                    break
            assert endpoint is not None
            post = f"{env.url}{endpoint}"
            assert (await http.post(post, json=init, headers=alice.auth)).status_code == 202
            foreign = await http.post(post, json=LIST, headers=mallory.auth)
            assert foreign.status_code == 404, foreign.text
            assert (await http.post(post, json=LIST)).status_code == 401
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post(post, json=initialized, headers=alice.auth)).status_code == 202
            assert (await http.post(post, json=LIST, headers=alice.auth)).status_code == 202
            answered: list[Any] = []
            async for line in lines:  # only the owner's requests are answered on the stream
                if line.startswith("data:"):
                    answered.append(json.loads(line[5:])["id"])
                    if len(answered) == 2:
                        break
            assert answered == [1, 2]


# -- keys never leak ----------------------------------------------------------------------------------------
def audit(env: Env, **filters: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params = {**filters, "limit": "1000", **({"after_seq": str(after)} if after is not None else {})}
        resp = httpx2.get(f"{env.url}/v1/audit", params=params, headers=env.root.auth)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        out.extend(body["entries"])
        if body["next_after_seq"] is None:
            return out
        after = body["next_after_seq"]


def test_keys_never_appear_in_audit_records_responses_or_logs(env: Env) -> None:
    key = env.new_key()
    responses = [
        httpx2.post(f"{env.url}/v1/tools/echo.ping/call", json={"arguments": {"message": "x"}}, headers=key.auth),
        httpx2.post(f"{env.url}/v1/tools/echo.ping/call", json={"arguments": {"data": {"k": "v"}}},
                    headers={**key.auth, "X-User-Id": "someone-else"}),
        httpx2.get(f"{env.url}/v1/tools", headers={"Authorization": f"Bearer {key.secret[:-1]}x"}),
        initialize(env.url, key.auth),
    ]
    assert [r.status_code for r in responses] == [200, 403, 401, 200]
    secrets = [s.split("_", 2)[2] for s in env.secrets]  # the secret part of every key made here
    everything = json.dumps(audit(env))
    listed = northstar_cli(env.gw.data_dir, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    public = json.loads(listed.stdout)["keys"]
    assert key.key_id in {k["key_id"] for k in public}
    assert all("digest" not in k and "key" not in k for k in public)
    created = [e for e in audit(env) if e.get("action") == "key_create" and e.get("key_id") == key.key_id]
    assert len(created) == 1 and created[0]["key_user"] == key.user
    for secret in secrets:
        assert secret not in everything
        assert secret not in listed.stdout
        assert secret not in env.gw.stderr_text()
        for resp in responses:
            assert secret not in resp.text and secret not in json.dumps(dict(resp.headers))
