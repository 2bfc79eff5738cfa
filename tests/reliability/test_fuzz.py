"""Fuzzing the HTTP and JSON-RPC surfaces of a real gateway with Hypothesis.

Invariants, for every generated input: no 5xx; every non-2xx is the canonical envelope (REST)
or a JSON-RPC error carrying it in ``data`` (MCP); every 2xx on an MCP door is a JSON-RPC reply
(or a bare 202 for a notification); the process is alive and healthy afterwards.

``NORTHSTAR_FUZZ_EXAMPLES`` sets the examples per test (default 250: about 2,250 inputs in all, in
under a minute); ``make soak`` runs more. Generation is derandomized: a run is reproducible.
The REST API publishes no OpenAPI document, so its routes are listed here (schemathesis would
need one).
"""

from __future__ import annotations

import json
import os
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import GatewayProcess
from tests.reliability.kit import (
    HANDSHAKE,
    META,
    MODERN,
    Session,
    assert_envelope,
    assert_rpc_error,
    healthy,
    mcp_headers,
    replies,
    reply_of,
    run_stdio,
    started,
    tool_error,
    traceback_free,
)

EXAMPLES = int(os.environ.get("NORTHSTAR_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
COUNTS: dict[str, int] = {}
METHODS = ["initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read", "prompts/list",
           "server/discover", "notifications/initialized", "notifications/cancelled", "completion/complete",
           "logging/setLevel", "subscriptions/listen", "nope", ""]
TOOLS = ["echo__ping", "echo.ping", "media_v2__create_asset", "media_v2__get_asset", "media_v2__list_assets",
         "media_v2__delete_asset", "diagnostics__sleep", "no__such", "", "a" * 300]


@pytest.fixture(scope="module")
def fgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway of its own: the REST fuzz may change policy as an admin."""
    with started(tmp_path_factory.mktemp("fuzz")) as gw:
        yield gw
    traceback_free(gw)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60) as c:
        yield c


def count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


# -- strategies -------------------------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)
ids = st.integers(-(2**63), 2**63) | st.text(max_size=20) | st.none() | st.booleans() \
    | st.floats(allow_nan=False, allow_infinity=False) \
    | st.just({"a": 1})
arguments = st.dictionaries(st.sampled_from(["message", "data", "name", "mime_type", "content_text", "tags",
                                             "asset_id", "limit", "cursor", "seconds", "x"]), json_values, max_size=5)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """Mostly JSON-RPC-shaped objects with something wrong or unusual, sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        msg["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2]))
    if draw(st.integers(0, 4)):
        msg["id"] = draw(ids)
    method = draw(st.sampled_from(METHODS) | st.text(max_size=30))
    if draw(st.integers(0, 6)):
        msg["method"] = method
    if method == "tools/call" and draw(st.booleans()):
        params: Any = {"name": draw(st.sampled_from(TOOLS) | st.text(max_size=20)), "arguments": draw(arguments)}
    else:
        params = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4) | json_values)
    if draw(st.integers(0, 3)):
        msg["params"] = params
    if isinstance(msg.get("params"), dict) and draw(st.booleans()):
        msg["params"]["_meta"] = META
    if draw(st.integers(0, 8)) == 0:
        msg[draw(st.sampled_from(["result", "error"]))] = draw(json_values)
    return msg


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid body with bytes flipped, cut or spliced in."""
    base = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo__ping", "arguments": {"message": "hi"}, "_meta": META}}).encode()
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b"[", b"{", b'"', b"\\", b"NaN", b",", b"\x00", b"\xff", b"1e999", b'"a":1,"a":2']))
        else:
            del data[pos:]
    return bytes(data)


# -- checks -----------------------------------------------------------------------------------------
def check_mcp(resp: httpx2.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code >= 400:
        body = resp.json()
        assert_rpc_error(resp, resp.status_code, body["error"]["code"], rid=body.get("id"))
        return
    if resp.status_code == 202:
        assert resp.content == b""
        return
    assert resp.status_code == 200, resp.status_code
    reply = reply_of(resp)
    assert reply["jsonrpc"] == "2.0" and ("result" in reply) != ("error" in reply), reply
    if "error" in reply:
        assert isinstance(reply["error"]["code"], int) and isinstance(reply["error"]["message"], str)


def post_mcp(gw: GatewayProcess, client: httpx2.Client, door: str, content: bytes,
             method: Any = "tools/call", name: Any = None) -> httpx2.Response:
    headers = mcp_headers("fuzz", "fuzzer")
    path = "/mcp"
    if door == "2026":
        headers["MCP-Protocol-Version"] = MODERN
        headers["Mcp-Method"] = method if isinstance(method, str) and method.isprintable() and method.isascii() \
            else "tools/call"
        if isinstance(name, str) and name.isascii() and name.isprintable():
            headers["Mcp-Name"] = name
    elif door == "2025":
        headers["MCP-Protocol-Version"] = HANDSHAKE
    elif door == "stateless":
        path = "/mcp/stateless"
    return client.post(f"{gw.url}{path}", content=content, headers=headers)


# -- JSON-RPC surface -------------------------------------------------------------------------------
@pytest.mark.parametrize("door", ["2026", "2025", "stateless"])
def test_fuzz_jsonrpc_messages(fgw: GatewayProcess, client: httpx2.Client, door: str) -> None:
    @FUZZ
    @given(msg=messages())
    def run(msg: Any) -> None:
        count(f"jsonrpc-{door}")
        params = msg.get("params") if isinstance(msg, dict) else None
        name = params.get("name") if isinstance(params, dict) else None
        method = msg.get("method") if isinstance(msg, dict) else None
        check_mcp(post_mcp(fgw, client, door, json.dumps(msg).encode(), method, name))

    run()
    assert COUNTS[f"jsonrpc-{door}"] >= EXAMPLES
    assert healthy(fgw)


def test_fuzz_bytes_and_mutations(fgw: GatewayProcess, client: httpx2.Client) -> None:
    @FUZZ
    @given(body=mutated() | st.binary(max_size=300), door=st.sampled_from(["2026", "2025", "stateless"]))
    def run(body: bytes, door: str) -> None:
        count("bytes")
        check_mcp(post_mcp(fgw, client, door, body, "tools/call", "echo__ping"))

    run()
    assert COUNTS["bytes"] >= EXAMPLES
    assert healthy(fgw)


def test_fuzz_in_a_live_session(fgw: GatewayProcess, client: httpx2.Client) -> None:
    """Messages into one live 2025-era session: it keeps answering throughout."""
    session = Session(client, fgw.url, "fuzz-session", "fuzzer").open()

    @FUZZ
    @given(msg=messages())
    def run(msg: Any) -> None:
        count("session")
        resp = session.post(msg)
        check_mcp(resp)

    run()
    assert "result" in session.request("ping")
    assert session.delete() == 200
    assert COUNTS["session"] >= EXAMPLES


def test_fuzz_tool_arguments(fgw: GatewayProcess, client: httpx2.Client) -> None:
    """Arbitrary arguments to every tool (2026 era): a result, an isError result or -32602."""
    @FUZZ
    @given(name=st.sampled_from(TOOLS), args=arguments | json_values)
    def run(name: str, args: Any) -> None:
        count("arguments")
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": name, "arguments": args, "_meta": META}}
        resp = post_mcp(fgw, client, "2026", json.dumps(body).encode(), "tools/call", name)
        check_mcp(resp)
        if resp.status_code == 200:
            reply = reply_of(resp)
            if "result" in reply and reply["result"].get("isError"):
                tool_error(reply["result"])

    run()
    assert COUNTS["arguments"] >= EXAMPLES


# -- headers -----------------------------------------------------------------------------------------
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=200)


def test_fuzz_identity_and_protocol_headers(fgw: GatewayProcess, client: httpx2.Client) -> None:
    @FUZZ
    @given(tenant=header_text, user=header_text, mode=header_text, request_id=header_text, version=header_text,
           which=st.sets(st.sampled_from(["tenant", "user", "mode", "request_id", "version"]), min_size=1))
    def run(tenant: str, user: str, mode: str, request_id: str, version: str, which: set[str]) -> None:
        count("headers")
        values = {"tenant": ("X-Tenant-Id", tenant), "user": ("X-User-Id", user), "mode": ("X-Mode", mode),
                  "request_id": ("X-Request-Id", request_id), "version": ("MCP-Protocol-Version", version)}
        # an HTTP client cannot send leading or trailing whitespace (the parser would strip it)
        headers = {values[k][0]: values[k][1].strip(" \t") for k in which}
        rest = client.get(f"{fgw.url}/v1/tools", headers=[(k, v.encode("latin-1")) for k, v in headers.items()])
        assert rest.status_code in (200, 400), rest.text
        if rest.status_code == 400:
            assert_envelope(rest, 400, "invalid_header")
        mcp = client.post(f"{fgw.url}/mcp", content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                                               "params": {}}).encode(),
                          headers=[("Content-Type", "application/json"),
                                   ("Accept", "application/json, text/event-stream"),
                                   *((k, v.encode("latin-1")) for k, v in headers.items())])
        check_mcp(mcp)

    run()
    assert COUNTS["headers"] >= EXAMPLES


# -- REST --------------------------------------------------------------------------------------------
ROUTES = [
    ("GET", "/health"), ("GET", "/metrics"), ("GET", "/v1/tools"), ("POST", "/v1/tools/{s}/call"),
    ("GET", "/v1/drafts"), ("GET", "/v1/drafts/{s}"), ("PUT", "/v1/drafts/{s}"), ("GET", "/v1/drafts/{s}/versions"),
    ("GET", "/v1/drafts/{s}/versions/{n}"), ("POST", "/v1/drafts/{s}/publish"), ("GET", "/v1/kpi/bindings/{s}"),
    ("PUT", "/v1/kpi/bindings/{s}"), ("GET", "/v1/kpi/status/{s}"), ("GET", "/v1/firearms/bindings"),
    ("PUT", "/v1/firearms/bindings/{s}"), ("DELETE", "/v1/firearms/bindings/{s}"), ("GET", "/v1/firearms/grants"),
    ("POST", "/v1/firearms/grants"), ("DELETE", "/v1/firearms/grants/{s}/{s}/{s}"), ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"), ("POST", "/v1/keys"), ("DELETE", "/v1/keys/{s}"), ("GET", "/v1/overlays/{s}"),
    ("DELETE", "/v1/overlays/{s}"), ("POST", "/v1/overlays/{s}/rollback"), ("GET", "/v1/registry/packages/{s}"),
    ("GET", "/v1/registry/packages/{s}/{s}"), ("POST", "/v1/sandbox/run"), ("GET", "/{s}"), ("POST", "/v1/{s}"),
]
# Drawn like any identity, replaced by the gateway's admin key when the request is sent.
AS_ADMIN = {"Authorization": "Bearer <the admin key>"}
segment = st.text(alphabet=string.ascii_letters + string.digits + "._-~%:@!$&'()*+,;=", min_size=1, max_size=30)
query = st.dictionaries(st.sampled_from(["limit", "after", "after_seq", "tenant", "tool", "user", "decision",
                                         "since", "until", "x"]), st.text(max_size=20), max_size=4)


@st.composite
def rest_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None, dict[str, str]]:
    method, pattern = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = pattern
    while "{s}" in path:
        path = path.replace("{s}", draw(segment), 1)
    path = path.replace("{n}", str(draw(st.integers(-5, 2**40))))
    body: bytes | None = None
    if method in ("POST", "PUT", "PATCH"):
        choice = draw(st.integers(0, 4))
        if choice == 0:
            body = draw(st.binary(max_size=200))
        elif choice == 1:
            body = json.dumps(draw(json_values)).encode()
        else:
            body = json.dumps(draw(st.fixed_dictionaries({}, optional={
                "arguments": arguments, "spec": json_values, "expected_version": json_values,
                "firearm": json_values, "tenant": json_values, "user": json_values, "reason": json_values,
                "timeout_s": json_values, "bindings": json_values, "admin": json_values,
                "draft_id": json_values, "tool": json_values}))).encode()
    who = draw(st.sampled_from([AS_ADMIN, {"X-User-Id": "fuzzer", "X-Tenant-Id": "fuzz"}, {}]))
    ctype = draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]))
    headers = {**who, **({"Content-Type": ctype} if ctype else {})}
    return method, path, draw(query), body, headers


def test_fuzz_rest(fgw: GatewayProcess, client: httpx2.Client) -> None:
    @FUZZ
    @given(req=rest_requests())
    def run(req: tuple[str, str, dict[str, str], bytes | None, dict[str, str]]) -> None:
        count("rest")
        method, path, params, body, headers = req
        if headers.get("Authorization") == AS_ADMIN["Authorization"]:
            headers = {**headers, **fgw.admin_headers}
        resp = client.request(method, f"{fgw.url}{path}", params=params, content=body, headers=headers)
        assert resp.status_code < 500, (method, path, resp.status_code, resp.text[:500])
        if resp.status_code >= 400:
            assert_envelope(resp, resp.status_code)

    run()
    assert COUNTS["rest"] >= EXAMPLES
    assert healthy(fgw)


# -- stdio --------------------------------------------------------------------------------------------
def test_fuzz_stdio_lines(tmp_path: Path) -> None:
    """Seeded random lines (JSON-RPC-ish objects, mutations, junk) to one stdio process: each gets
    at most one reply, every stdout line is JSON, and a final ping still answers."""
    rng = random.Random(20261123)
    lines: list[bytes] = [json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
        "protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}).encode()]
    for i in range(EXAMPLES):
        kind = rng.randrange(4)
        if kind == 0:
            lines.append(bytes(rng.randrange(32, 256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b" "))
        elif kind == 1:
            lines.append(json.dumps({"jsonrpc": "2.0", "id": f"q{i}", "method": rng.choice(METHODS),
                                     "params": {"name": rng.choice(TOOLS), "arguments": {"message": str(i)}}}).encode())
        elif kind == 2:
            base = bytearray(json.dumps({"jsonrpc": "2.0", "id": f"m{i}", "method": "ping"}).encode())
            del base[rng.randrange(len(base)):]
            lines.append(bytes(base) or b"{")
        else:
            lines.append(json.dumps(rng.choice([[], [1], {"id": i}, "x", None, 3.5, {"jsonrpc": "2.0", "id": None}]))
                         .encode())
    lines.append(json.dumps({"jsonrpc": "2.0", "id": "last", "method": "ping"}).encode())
    COUNTS["stdio"] = len(lines)
    messages, stderr, code = run_stdio(tmp_path, lines, lambda msgs: any(m.get("id") == "last" for m in msgs),
                                       timeout_s=180)
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    got = replies(messages)
    assert any(m.get("id") == "init" for m in got)
    ids = [m.get("id") for m in got if m.get("id") is not None]
    assert len(ids) == len(set(ids)), "a request was answered twice"


def test_fuzz_total_inputs() -> None:
    """The figure reported in docs/reliability.md: inputs sent by this module's tests."""
    total = sum(COUNTS.values())
    print(f"\nfuzzed inputs: {total} {dict(sorted(COUNTS.items()))}")
    assert total >= 7 * EXAMPLES
