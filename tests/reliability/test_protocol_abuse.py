"""A. Protocol abuse against a real gateway: every door answers garbage with the right error,
executes nothing, and stays up.

A1 malformed / truncated / non-UTF-8 / empty bodies (HTTP doors, REST, stdio incl. a 10 MB line)
A2 invalid request objects        A3 batches          A4 unknown method / tool, schema violations
A5 hostile JSON shapes            A6 bad MCP-Protocol-Version
A7 one JSON-RPC id from many concurrent clients     A8 bad identity headers
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from tests.harness import GatewayProcess
from tests.reliability.kit import (
    ACCEPT_BOTH,
    HANDSHAKE,
    MODERN,
    LegacySse,
    Session,
    assert_envelope,
    assert_no_internals,
    assert_rpc_error,
    audit,
    connect,
    fresh,
    healthy,
    init_params,
    mcp_headers,
    modern_request,
    raw_exchange,
    read_response,
    replies,
    reply_of,
    rpc,
    rss_kb,
    run_stdio,
    tool_error,
)

BAD_BODIES = {
    "malformed": b"{not json",
    "truncated": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo__p',
    "invalid-utf8": b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}',
    "empty": b"",
    "whitespace": b"  \r\n ",
    "utf16": '{"jsonrpc":"2.0","id":1,"method":"ping"}'.encode("utf-16"),
}
MCP_DOORS = ("mcp-no-session", "mcp-session", "mcp-2026", "mcp-stateless", "sse-messages")


class Doors:
    """POST a raw body through one MCP door as a fresh tenant."""

    def __init__(self, gw: GatewayProcess, http: httpx2.Client, door: str) -> None:
        self.gw, self.http, self.door = gw, http, door
        self.tenant = fresh("abuse")
        self.session: Session | None = None
        self.sse: LegacySse | None = None

    def __enter__(self) -> Doors:
        if self.door == "mcp-session":
            self.session = Session(self.http, self.gw.url, self.tenant).open()
        elif self.door == "sse-messages":
            self.sse = LegacySse(self.gw, self.tenant).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sse is not None:
            self.sse.__exit__()
        if self.session is not None:
            self.session.delete()

    def post(self, body: bytes, **headers: str) -> httpx2.Response:
        if self.door == "sse-messages":
            assert self.sse is not None
            return self.sse.post(None, raw=body, **headers)
        base = mcp_headers(self.tenant)
        path = "/mcp/stateless" if self.door == "mcp-stateless" else "/mcp"
        if self.door == "mcp-no-session":
            base["MCP-Protocol-Version"] = HANDSHAKE
        elif self.door == "mcp-session":
            assert self.session is not None
            base = self.session.headers()
        elif self.door == "mcp-2026":
            base.update({"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
        return self.http.post(f"{self.gw.url}{path}", content=body, headers={**base, **headers})

    def still_works(self) -> None:
        """The door (and its session, if any) answers a valid request after the garbage."""
        if self.session is not None:
            assert "result" in self.session.request("ping")
        elif self.sse is not None:
            self.sse.post(rpc("ping", None, 99))
            assert self.sse.reply(99)["result"] == {}
        elif self.door == "mcp-2026":
            body, headers = modern_request("tools/list")
            resp = self.http.post(f"{self.gw.url}/mcp", json=body, headers=mcp_headers(self.tenant, **headers))
            assert "result" in reply_of(resp), resp.text
        assert healthy(self.gw)


def audit_count(gw: GatewayProcess) -> int:
    resp = httpx2.get(f"{gw.url}/v1/audit/verify", headers=gw.admin_headers, timeout=60)
    assert resp.status_code == 200 and resp.json()["ok"], resp.text
    return int(resp.json()["count"])


def no_audit(gw: GatewayProcess, tenant: str) -> None:
    assert audit(gw.url, tenant=tenant) == [], "something was executed or audited"


# -- A1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("door", MCP_DOORS)
def test_a1_bad_bodies_on_every_mcp_door(rgw: GatewayProcess, http: httpx2.Client, door: str) -> None:
    with Doors(rgw, http, door) as d:
        for name, body in BAD_BODIES.items():
            resp = d.post(body)
            err = assert_rpc_error(resp, 400, -32700, "invalid_json")
            assert "UTF-8" in err["message"] if name in ("invalid-utf8", "utf16") else True, (name, err)
        d.still_works()
        no_audit(rgw, d.tenant)


def test_a1_bad_bodies_on_rest(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("abuse")
    headers = {"Content-Type": "application/json", "X-Tenant-Id": tenant, "X-User-Id": "u"}
    for name, body in BAD_BODIES.items():
        resp = http.post(f"{rgw.url}/v1/tools/echo.ping/call", content=body, headers=headers)
        if name in ("empty", ):
            # A tool call needs its body ({"arguments": {...}}): an empty one is refused, not read as {}.
            assert_envelope(resp, 400, "validation_error")
            continue
        assert_envelope(resp, 400, "invalid_json")
    draft = http.put(f"{rgw.url}/v1/drafts/d1", content=b"", headers=headers)
    assert_envelope(draft, 400, "validation_error")
    for body in (b"{not json", b'{"spec": {"a": 1', b'{"spec": "\xff"}'):
        assert_envelope(http.put(f"{rgw.url}/v1/drafts/d1", content=body, headers=headers), 400, "invalid_json")
    assert http.get(f"{rgw.url}/v1/drafts/d1", headers=headers).status_code == 404
    assert audit(rgw.url, tenant=tenant) == []  # nothing reached the gate chain
    assert healthy(rgw)


def test_a1_stdio_garbage_and_a_10mb_line(tmp_path: Path) -> None:
    ten_mb_garbage = b"x" * (10 * 1024 * 1024)
    ten_mb_call = json.dumps(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "m" * (10 << 20)}},
                                 50)).encode()
    lines = [
        json.dumps(rpc("initialize", init_params(), 1)).encode(),
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
        b"not json at all",
        b'{"jsonrpc":"2.0","id":2,"method":"ping"',
        b'{"jsonrpc":"2.0","id":3,"method":"\xff"}',
        b"   ",
        b'{"jsonrpc":"2.0","id":4,"method":"ping","params":{"x":NaN}}',
        ten_mb_garbage,
        ten_mb_call,
        json.dumps(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "alive"}}, 5)).encode(),
        json.dumps(rpc("ping", None, 6)).encode(),
    ]
    messages, stderr, code = run_stdio(tmp_path, lines, expect=10)
    got = replies(messages)
    errors = [(m["id"], m["error"]["code"]) for m in got if "error" in m]
    assert errors == [(None, -32700)] * 5 + [(None, -32600)] * 2, errors
    assert all("larger than" in m["error"]["message"] for m in got if m.get("error", {}).get("code") == -32600)
    results = {m["id"]: m["result"] for m in got if "result" in m}
    assert set(results) == {1, 5, 6}
    assert results[5]["structuredContent"]["message"] == "alive" and results[6] == {}
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


# -- A2 ---------------------------------------------------------------------------------------------
INVALID_OBJECTS: dict[str, tuple[Any, Any]] = {  # name -> (message, id expected in the error)
    "jsonrpc-missing": ({"id": 1, "method": "ping"}, 1),
    "jsonrpc-1.0": ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 1),
    "id-null": ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),
    "id-true": ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None),
    "id-float": ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, None),
    "id-object": ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, None),
    "id-array": ({"jsonrpc": "2.0", "id": [1], "method": "ping"}, None),
    "params-scalar": ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": 3}, 1),
    "params-string": ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}, 1),
    "params-array": ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ["echo__ping"]}, 1),
    "method-number": ({"jsonrpc": "2.0", "id": 1, "method": 5}, 1),
    "method-empty": ({"jsonrpc": "2.0", "id": 1, "method": ""}, 1),
    "no-method": ({"jsonrpc": "2.0", "id": 1}, 1),
    "response-without-id": ({"jsonrpc": "2.0", "result": {}}, None),
    "scalar-body": (42, None),
    "string-body": ("ping", None),
}


@pytest.mark.parametrize("door", MCP_DOORS)
def test_a2_invalid_request_objects(rgw: GatewayProcess, http: httpx2.Client, door: str) -> None:
    with Doors(rgw, http, door) as d:
        for name, (message, rid) in INVALID_OBJECTS.items():
            resp = d.post(json.dumps(message).encode())
            err = assert_rpc_error(resp, 400, -32600, "invalid_request", rid=rid)
            assert err["message"], name
        d.still_works()
        no_audit(rgw, d.tenant)


def test_a2_a3_invalid_objects_and_batches_over_stdio(tmp_path: Path) -> None:
    lines = [json.dumps(rpc("initialize", init_params(), 0)).encode()]
    lines += [json.dumps(m).encode() for m, _ in INVALID_OBJECTS.values()]
    lines += [json.dumps([rpc("ping", None, 7), rpc("ping", None, 8)]).encode(), b"[]"]
    lines.append(json.dumps(rpc("ping", None, 9)).encode())
    messages, stderr, code = run_stdio(tmp_path, lines, expect=len(INVALID_OBJECTS) + 4)
    got = replies(messages)
    results = {m["id"]: m["result"] for m in got if "result" in m}
    assert set(results) == {0, 9} and results[9] == {}
    expected = [rid for _, rid in INVALID_OBJECTS.values()] + [None, None]
    assert [(m["id"], m["error"]["code"]) for m in got if "error" in m] == [(rid, -32600) for rid in expected]
    assert code == 0 and "Traceback" not in stderr


# -- A3 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25", MODERN, None])
def test_a3_batches_are_refused(rgw: GatewayProcess, http: httpx2.Client, version: str | None) -> None:
    """Batches: -32600 on every version (>= 2025-06-18 by the spec; the SDK serves none at all)."""
    tenant = fresh("batch")
    extra = {"MCP-Protocol-Version": version} if version else {}
    for batch in ([rpc("initialize", init_params(), 1)], [rpc("ping", None, 1), rpc("ping", None, 2)], []):
        resp = http.post(f"{rgw.url}/mcp", json=batch, headers=mcp_headers(tenant, **extra))
        err = assert_rpc_error(resp, 400, -32600, "invalid_request")
        assert "batch" in err["message"].lower() or batch == []
    no_audit(rgw, tenant)


# -- A4 ---------------------------------------------------------------------------------------------
def test_a4_unknown_method(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("unknown")
    session = Session(http, rgw.url, tenant).open()
    reply = session.request("no/such/method", {})
    assert reply["error"]["code"] == -32601  # 2025 era: HTTP 200, the error in the reply stream
    body, headers = modern_request("no/such/method")
    resp = http.post(f"{rgw.url}/mcp", json=body, headers=mcp_headers(tenant, **headers))
    # 2026-07-28: the spec maps -32601 to HTTP 404 (the transport's status table)
    err = assert_rpc_error(resp, 404, -32601, "method_not_found", rid=1)
    assert err["message"] == "Method not found"
    assert session.delete() == 200
    no_audit(rgw, tenant)


def test_a4_unknown_tool_is_audited_and_runs_nothing(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("unknown")
    session = Session(http, rgw.url, tenant).open()
    reply = session.call("no_such__tool", {})
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["code"] == "unknown_tool"
    body, headers = modern_request("tools/call", {"name": "media_v2__no_such_op", "arguments": {}}, 2)
    resp = http.post(f"{rgw.url}/mcp", json=body, headers=mcp_headers(tenant, **headers))
    assert_rpc_error(resp, 400, -32602, "unknown_tool", rid=2)
    rest = http.post(f"{rgw.url}/v1/tools/nope.nope/call", json={}, headers=mcp_headers(tenant))
    assert_envelope(rest, 404, "unknown_tool")
    records = audit(rgw.url, tenant=tenant)
    assert sorted(r["requested_name"] for r in records) == ["media_v2__no_such_op", "no_such__tool", "nope.nope"]
    assert {r["decision"] for r in records} == {"deny"} and not [r for r in records if r["event"] == "outcome"]
    session.delete()


def test_a4_schema_violation_is_an_error_result_nothing_runs(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("schema")
    from tests.reliability.kit import grant

    grant(rgw.url, tenant, "u")
    session = Session(http, rgw.url, tenant).open()
    bad = [{"name": "x", "mime_type": 42, "content_text": "a"}, {"name": "x", "mime_type": "text/plain"},
           {"name": "x", "mime_type": "text/plain", "content_text": "a", "extra": 1},
           {"name": "x", "mime_type": "text/plain", "content_text": "a", "tags": ["UPPER"] * 3}]
    for args in bad:
        result = session.call("media_v2__create_asset", args)["result"]
        assert tool_error(result)["code"] == "validation_error"
    listed = session.call("media_v2__list_assets", {})["result"]
    assert listed["structuredContent"]["assets"] == []
    writes = [r for r in audit(rgw.url, tenant=tenant) if r["requested_name"] == "media_v2__create_asset"]
    assert len(writes) == len(bad) and {r["decision"] for r in writes} == {"deny"}
    assert not [r for r in writes if r["event"] == "outcome"]
    session.delete()


# -- A5 ---------------------------------------------------------------------------------------------
def hostile_bodies() -> dict[str, tuple[bytes, int, int]]:
    """name -> (body, HTTP status, JSON-RPC code)."""
    call = modern_request("tools/call", {"name": "echo__ping", "arguments": {"data": {"slot": 0}}})[0]
    template = json.dumps(call)

    def with_slot(value: str) -> bytes:
        return template.replace('"slot": 0', f'"slot": {value}').encode()

    return {
        "nesting-100k": (b"[" * 100_000 + b"]" * 100_000, 400, -32600),
        "nesting-65": (with_slot("[" * 62 + "]" * 62), 400, -32600),
        "nesting-unclosed-1m": (b'{"a":' * 200_000, 400, -32600),
        "million-empty-lists": (with_slot("[" + "[]," * 1_000_000 + "[]]"), 400, -32600),
        "million-numbers": (with_slot("[" + "0," * 1_500_000 + "0]"), 400, -32600),
        "huge-array-of-tags": (json.dumps(modern_request("tools/call", {
            "name": "media_v2__create_asset",
            "arguments": {"name": "x", "mime_type": "text/plain", "content_text": "x", "tags": ["a"] * 600_000},
        })[0]).encode(), 400, -32600),
        "NaN": (with_slot("NaN"), 400, -32700),
        "Infinity": (with_slot("-Infinity"), 400, -32700),
        "1e400": (with_slot("1e400"), 400, -32700),
        "huge-int": (with_slot("9" * 5000), 400, -32700),
        "duplicate-keys": (template.replace('"jsonrpc": "2.0"', '"jsonrpc": "2.0", "jsonrpc": "2.0"').encode(),
                           400, -32700),
        "duplicate-nested": (with_slot('{"k": 1, "k": 2}'), 400, -32700),
    }


def test_a5_hostile_json_is_refused_fast_in_bounded_memory(rgw: GatewayProcess, http: httpx2.Client) -> None:
    assert rgw.proc is not None
    tenant = fresh("hostile")
    headers = mcp_headers(tenant, **modern_request("tools/call", {"name": "echo__ping"})[1])
    cases = hostile_bodies()
    for _warm_up in range(2):  # the allocator's high-water mark for 4 MiB bodies is reached first
        for body, _, _ in cases.values():
            http.post(f"{rgw.url}/mcp", content=body, headers=headers)
    baseline = rss_kb(rgw.proc.pid)
    slowest = 0.0
    for _round in range(3):
        for name, (body, status, code) in cases.items():
            started = time.monotonic()
            resp = http.post(f"{rgw.url}/mcp", content=body, headers=headers)
            slowest = max(slowest, time.monotonic() - started)
            assert_rpc_error(resp, status, code)
            if name.startswith("duplicate"):
                assert "duplicate key" in resp.json()["error"]["message"]
    grown_mb = (rss_kb(rgw.proc.pid) - baseline) / 1024
    assert slowest < 5.0, f"a hostile body took {slowest:.2f}s"
    # bounded: 36 bodies of up to 4 MiB move RSS by tens of MB at most (allocator fragmentation)
    assert grown_mb < 96, f"RSS grew {grown_mb:.0f} MB over three rounds of hostile bodies"
    assert rss_kb(rgw.proc.pid) < 512 * 1024
    rest = {"Content-Type": "application/json", "X-Tenant-Id": tenant}
    for body, _, code in cases.values():
        resp = http.post(f"{rgw.url}/v1/tools/echo.ping/call", content=body, headers=rest)
        assert_envelope(resp, 400, "invalid_json" if code == -32700 else "validation_error")
    no_audit(rgw, tenant)
    assert healthy(rgw)


# -- A6 ---------------------------------------------------------------------------------------------
BAD_VERSIONS = ["1999-01-01", "2025-06-19", "garbage", "", "2026-07-28x", "2025-06-18, 2026-07-28", "x" * 300]


def test_a6_unsupported_protocol_version(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("version")
    session = Session(http, rgw.url, tenant).open()
    for bad in BAD_VERSIONS:
        for body, extra in ((rpc("initialize", init_params(), 1), {}), (rpc("ping"), {"Mcp-Session-Id": session.id}),
                            (modern_request("tools/list")[0], {"Mcp-Method": "tools/list"})):
            resp = http.post(f"{rgw.url}/mcp", json=body,
                             headers=mcp_headers(tenant, **extra, **{"MCP-Protocol-Version": bad}))
            err = assert_rpc_error(resp, 400, -32600, "unsupported_protocol_version")
            assert "Unsupported protocol version" in err["message"]
            assert err["data"]["details"]["supported"] == ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25",
                                                           MODERN]
        get = http.get(f"{rgw.url}/mcp", headers={**session.headers(), "MCP-Protocol-Version": bad,
                                                   "Accept": "text/event-stream"})
        assert_rpc_error(get, 400, -32600, "unsupported_protocol_version")
    twice = [*mcp_headers(tenant, session=session.id).items(), ("MCP-Protocol-Version", HANDSHAKE),
             ("MCP-Protocol-Version", HANDSHAKE)]
    assert_rpc_error(http.post(f"{rgw.url}/mcp", json=rpc("ping"), headers=twice), 400, -32600)
    assert "result" in session.request("ping")  # the session is unharmed
    session.delete()


# -- A7 ---------------------------------------------------------------------------------------------
async def test_a7_same_id_from_many_concurrent_clients(rgw: GatewayProcess) -> None:
    """60 stateless 2026 calls, 20 sessions and 5 legacy SSE sessions, all with id 7 at once:
    every answer reaches the caller that asked (its own message echoed)."""
    results: dict[str, str] = {}

    async def modern(http: httpx2.AsyncClient, i: int) -> None:
        body, headers = modern_request("tools/call", {"name": "echo__ping", "arguments": {"message": f"m{i}"}}, 7)
        resp = await http.post(f"{rgw.url}/mcp", json=body, headers=mcp_headers(f"same-id-{i}", **headers))
        reply = reply_of(resp)
        assert reply["id"] == 7
        results[f"m{i}"] = reply["result"]["structuredContent"]["message"]

    async def session(http: httpx2.AsyncClient, i: int) -> None:
        tenant = f"same-id-s{i}"
        init = await http.post(f"{rgw.url}/mcp", json=rpc("initialize", init_params(), 7),
                               headers=mcp_headers(tenant))
        sid = init.headers["mcp-session-id"]
        headers = mcp_headers(tenant, version=HANDSHAKE, session=sid)
        await http.post(f"{rgw.url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                        headers=headers)
        resp = await http.post(f"{rgw.url}/mcp", headers=headers,
                               json=rpc("tools/call", {"name": "echo__ping", "arguments": {"message": f"s{i}"}}, 7))
        reply = reply_of(resp)
        assert reply["id"] == 7
        results[f"s{i}"] = reply["result"]["structuredContent"]["message"]
        await http.delete(f"{rgw.url}/mcp", headers=headers)

    def legacy(i: int) -> None:
        with LegacySse(rgw, f"same-id-l{i}") as sse:
            sse.post(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": f"l{i}"}}, 7))
            results[f"l{i}"] = sse.reply(7)["result"]["structuredContent"]["message"]

    with trio.fail_after(120):
        async with httpx2.AsyncClient(timeout=60) as http, trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(modern, http, i)
            for i in range(20):
                nursery.start_soon(session, http, i)
            for i in range(5):
                nursery.start_soon(trio.to_thread.run_sync, legacy, i)
    assert len(results) == 85
    assert all(key == value for key, value in results.items()), results


# -- A8 ---------------------------------------------------------------------------------------------
BAD_IDENTITY = [
    ({"X-User-Id": "u" * 129}, "x-user-id"),
    ({"X-Tenant-Id": "t" * 129}, "x-tenant-id"),
    ({"X-Tenant-Id": "acme corp"}, "x-tenant-id"),
    ({"X-Tenant-Id": "acme\tcorp"}, "x-tenant-id"),
    ({"X-User-Id": "../../etc/passwd"}, "x-user-id"),
    ({"X-User-Id": "alice;drop"}, "x-user-id"),
    ({"X-Mode": "root"}, "x-mode"),
    ({"X-Request-Id": "has space"}, "x-request-id"),
    ({"X-Request-Id": "r" * 129}, "x-request-id"),
]


@pytest.mark.parametrize(("headers", "bad"), BAD_IDENTITY)
def test_a8_bad_identity_headers_are_a_canonical_400(rgw: GatewayProcess, http: httpx2.Client,
                                                     headers: dict[str, str], bad: str) -> None:
    before = audit_count(rgw)
    base = {"X-Tenant-Id": "a8", "X-User-Id": "u", **headers}
    rest = http.post(f"{rgw.url}/v1/tools/echo.ping/call", json={}, headers=base)
    assert assert_envelope(rest, 400, "invalid_header")["details"]["header"] == bad
    mcp = http.post(f"{rgw.url}/mcp", json=rpc("initialize", init_params()),
                    headers={"Content-Type": "application/json", "Accept": ACCEPT_BOTH, **base})
    assert assert_rpc_error(mcp, 400, -32600, "invalid_header")["data"]["details"]["header"] == bad
    body, route = modern_request("tools/call", {"name": "echo__ping", "arguments": {}})
    modern = http.post(f"{rgw.url}/mcp", json=body,
                       headers={"Content-Type": "application/json", "Accept": ACCEPT_BOTH, **route, **base})
    assert_rpc_error(modern, 400, -32600, "invalid_header")
    sse = http.get(f"{rgw.url}/sse", headers={"Accept": "text/event-stream", **base})
    assert_rpc_error(sse, 400, -32600, "invalid_header")
    assert audit_count(rgw) == before, "a request with a bad identity reached the gate chain"


def test_a8_duplicated_identity_headers(rgw: GatewayProcess, http: httpx2.Client) -> None:
    for name in ("X-Tenant-Id", "X-User-Id", "X-Mode", "Authorization"):
        value = "Bearer nsk_x" if name == "Authorization" else "saas"
        pairs = [("Content-Type", "application/json"), ("Accept", ACCEPT_BOTH), (name, value), (name, value)]
        rest = http.post(f"{rgw.url}/v1/tools/echo.ping/call", json={}, headers=pairs)
        assert_envelope(rest, 400, "invalid_header")
        mcp = http.post(f"{rgw.url}/mcp", json=rpc("initialize", init_params()), headers=pairs)
        assert_rpc_error(mcp, 400, -32600, "invalid_header")


def test_a8_crlf_and_control_bytes_in_identity_headers(rgw: GatewayProcess) -> None:
    """Line folding reaches the gateway and is refused canonically; a bare CR or a NUL is refused
    by the HTTP parser itself (400, connection closed) before any application code runs."""
    folded = (f"POST /v1/tools/echo.ping/call HTTP/1.1\r\nHost: 127.0.0.1:{rgw.port}\r\n"
              "Content-Type: application/json\r\nContent-Length: 2\r\nX-User-Id: alice\r\n X-Tenant-Id: evil\r\n"
              "\r\n{}").encode()
    status, _, body = raw_exchange(rgw, folded)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_header"
    assert_no_internals(body.decode())
    for raw_value in (b"alice\rX-Tenant-Id: evil", b"al\x00ice"):
        request = (b"GET /v1/tools HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-Id: " + raw_value + b"\r\n\r\n")
        with connect(rgw) as sock:
            sock.sendall(request)
            status, _, body = read_response(sock)
            assert status == 400 and body == b""
            assert sock.recv(10) == b""  # and the connection is closed
    assert healthy(rgw)


def test_a8_admin_header_is_not_enough_for_another_tenants_audit(rgw: GatewayProcess, http: httpx2.Client) -> None:
    """A non-admin asking for another tenant's audit gets only its own tenant's records; calling
    itself "admin" by header changes nothing."""
    for user in ("mallory", "admin"):
        mine = http.get(f"{rgw.url}/v1/audit", params={"tenant": "someone-else"},
                        headers={"X-Tenant-Id": "a8-own", "X-User-Id": user})
        assert mine.status_code == 200
        assert all(e["tenant"] == "a8-own" for e in mine.json()["entries"])
    assert http.get(f"{rgw.url}/v1/audit", headers=rgw.admin_headers).status_code == 200
