"""Hypothesis against every JSON-RPC door of a real gateway, and against stdio.

Doors: ``/mcp`` in a live 2025-era session, ``/mcp`` sessionless in the 2026-07-28 era,
``/mcp/stateless``, ``/messages/`` of a legacy HTTP+SSE session, and a ``northstar stdio``
subprocess. Inputs: every MCP method the gateway serves (and ones it does not) with params of
the right and wrong shapes, ids of every JSON type and size (past int64 and uint64), huge
numbers, notifications, responses, batches, mutated bytes, and hostile credential and
protocol headers. The gateway runs in API-key mode with keys made by the CLI.

Pass (``tests.reliability.fuzz_kit``): no status >= 500, no process exit, every JSON-RPC
error a non-zero integer code (over HTTP with the envelope in ``data``), every REST error the
envelope. The REST API itself is fuzzed from its OpenAPI document in ``test_fuzz_openapi``.

``NORTHSTAR_FUZZ_EXAMPLES`` sets the examples per test (default 200); generation is
derandomized, so a run is reproducible. The inputs each door got are printed at the end.
"""

from __future__ import annotations

import itertools
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.harness import GatewayProcess, gateway_env
from tests.reliability.fuzz_kit import (
    COUNTS,
    EXAMPLES,
    FUZZ,
    TENANT,
    TOOLS,
    USER,
    arguments,
    bearer,
    bodies,
    check_mcp_http,
    check_stream_messages,
    count,
    header_safe,
    json_values,
    keyed_gateway,
    method_and_name,
)
from tests.reliability.kit import (
    HANDSHAKE,
    META,
    MODERN,
    LegacySse,
    Session,
    assert_envelope,
    healthy,
    init_params,
    mcp_headers,
    reply_of,
    rpc,
    tool_error,
    traceback_free,
)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    with keyed_gateway(tmp_path_factory.mktemp("fuzz")) as (gw, keys):
        yield gw, keys
    traceback_free(gw)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=60) as c:
        yield c


def door_headers(door: str, key: str, msg: Any) -> tuple[str, dict[str, str]]:
    """(path, headers) of a POST on an HTTP door; the 2026 era adds its routing headers."""
    headers = mcp_headers(TENANT, USER, **bearer(key))
    if door == "stateless":
        return "/mcp/stateless", headers
    headers["MCP-Protocol-Version"] = MODERN
    method, name = method_and_name(msg)
    headers["Mcp-Method"] = method if header_safe(method) else "tools/call"
    if header_safe(name):
        headers["Mcp-Name"] = name
    return "/mcp", headers


# -- the HTTP doors -------------------------------------------------------------------------------
@pytest.mark.parametrize("door", ["2026", "stateless"])
def test_fuzz_sessionless_doors(keyed: tuple[GatewayProcess, dict[str, str]], client: httpx2.Client,
                                door: str) -> None:
    gw, keys = keyed

    @FUZZ
    @given(body=bodies)
    def run(body: Any) -> None:
        count(f"/mcp ({door})" if door == "2026" else "/mcp/stateless")
        path, headers = door_headers(door, keys["user"], body)
        check_mcp_http(client.post(f"{gw.url}{path}", content=json.dumps(body).encode(), headers=headers))

    run()
    assert healthy(gw)


def test_fuzz_in_a_live_session(keyed: tuple[GatewayProcess, dict[str, str]], client: httpx2.Client) -> None:
    """Messages into one live 2025-era session on /mcp: it keeps answering throughout."""
    gw, keys = keyed
    session = Session(client, gw.url, TENANT, USER, auth=bearer(keys["user"])).open()

    @FUZZ
    @given(body=bodies)
    def run(body: Any) -> None:
        count("/mcp (2025 session)")
        check_mcp_http(session.post(body))

    run()
    assert "result" in session.request("ping")
    assert session.delete() == 200
    assert healthy(gw)


def test_fuzz_legacy_sse_messages(keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    """Messages to /messages/ of one legacy SSE session; each is followed by a ping whose reply
    must arrive on the stream, and every error seen on the stream has a non-zero code."""
    gw, keys = keyed
    syncs = itertools.count()
    with LegacySse(gw, TENANT, USER, auth=bearer(keys["user"])) as sse:

        @FUZZ
        @given(body=bodies)
        def run(body: Any) -> None:
            count("/messages/ (legacy SSE)")
            resp = sse.post(body)
            assert resp.status_code < 500, resp.text[:500]
            if resp.status_code >= 400:
                check_mcp_http(resp)
            sync = f"sync-{next(syncs)}"
            assert sse.post(rpc("ping", rid=sync)).status_code == 202
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1].get("id") != sync:
                seen.append(sse.next_message(timeout_s=30))
            check_stream_messages(seen)

        run()
    assert healthy(gw)


def test_fuzz_bytes_and_mutations(keyed: tuple[GatewayProcess, dict[str, str]], client: httpx2.Client) -> None:
    """Valid requests with bytes flipped, cut or spliced in, and random bytes, on every HTTP door."""
    gw, keys = keyed
    base = json.dumps(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "hi"}, "_meta": META})).encode()

    @FUZZ
    @given(body=mutated(base) | st.binary(max_size=300), door=st.sampled_from(["2026", "stateless", "session"]))
    def run(body: bytes, door: str) -> None:
        count("raw bytes (HTTP doors)")
        if door == "session":
            headers = mcp_headers(TENANT, USER, version=HANDSHAKE, session="0" * 32, **bearer(keys["user"]))
            path = "/mcp"
        else:
            path, headers = door_headers(door, keys["user"], {"method": "tools/call", "params": {"name": "echo__ping"}})
        check_mcp_http(client.post(f"{gw.url}{path}", content=body, headers=headers))

    run()
    assert healthy(gw)


def mutated(base: bytes) -> st.SearchStrategy[bytes]:
    @st.composite
    def draw_mutation(draw: st.DrawFn) -> bytes:
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
                    [b"[", b"{", b'"', b"\\", b"NaN", b",", b"\x00", b"\xff", b"1e999", b'"a":1,"a":2',
                     b"18446744073709551616", b"-9223372036854775809"]))
            else:
                del data[pos:]
        return bytes(data)

    return draw_mutation()


def test_fuzz_tool_arguments(keyed: tuple[GatewayProcess, dict[str, str]], client: httpx2.Client) -> None:
    """Arbitrary arguments to every tool (2026 era): a result, an isError result or a JSON-RPC error."""
    gw, keys = keyed

    @FUZZ
    @given(name=st.sampled_from(TOOLS), args=arguments | json_values)
    def run(name: str, args: Any) -> None:
        count("/mcp (2026) tools/call arguments")
        body = rpc("tools/call", {"name": name, "arguments": args, "_meta": META})
        path, headers = door_headers("2026", keys["user"], body)
        resp = client.post(f"{gw.url}{path}", content=json.dumps(body).encode(), headers=headers)
        check_mcp_http(resp)
        if resp.status_code == 200:
            reply = reply_of(resp)
            if "result" in reply and reply["result"].get("isError"):
                tool_error(reply["result"])

    run()


# -- credentials and protocol headers -------------------------------------------------------------
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=200)


def test_fuzz_credential_identity_and_protocol_headers(keyed: tuple[GatewayProcess, dict[str, str]],
                                                       client: httpx2.Client) -> None:
    """Near-miss bearer tokens and hostile identity / protocol headers, on REST and /mcp:
    200, or 400 / 401 / 403 in the envelope; never a 5xx, never another identity."""
    gw, keys = keyed
    key = keys["user"]
    tokens = st.sampled_from([key, keys["admin"]]) | header_text | st.builds(
        lambda cut, junk: key[:cut] + junk, st.integers(0, len(key)), st.text("abcdef0123456789_-", max_size=4))

    @FUZZ
    @given(token=tokens, scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
           tenant=header_text, user=header_text, mode=header_text, request_id=header_text, version=header_text,
           which=st.sets(st.sampled_from(["auth", "tenant", "user", "mode", "request_id", "version"]), min_size=1))
    def run(token: str, scheme: str, tenant: str, user: str, mode: str, request_id: str, version: str,
            which: set[str]) -> None:
        count("headers (REST + /mcp)", 2)
        values = {"auth": ("Authorization", scheme + token), "tenant": ("X-Tenant-Id", tenant),
                  "user": ("X-User-Id", user), "mode": ("X-Mode", mode), "request_id": ("X-Request-Id", request_id),
                  "version": ("MCP-Protocol-Version", version)}
        # an HTTP client cannot send leading or trailing whitespace (the parser would strip it)
        sent = [(values[k][0], values[k][1].strip(" \t").encode("latin-1")) for k in sorted(which)]
        rest = client.get(f"{gw.url}/v1/tools", headers=sent)
        assert rest.status_code in (200, 400, 401, 403), rest.text[:500]
        if rest.status_code != 200:
            assert_envelope(rest, rest.status_code)
        mcp = client.post(f"{gw.url}/mcp", content=json.dumps(rpc("initialize", init_params())).encode(),
                          headers=[("Content-Type", "application/json"),
                                   ("Accept", "application/json, text/event-stream"), *sent])
        check_mcp_http(mcp)

    run()


# -- stdio ------------------------------------------------------------------------------------------
class Stdio:
    """One ``northstar stdio`` process; every stdout line must be JSON (checked as it arrives)."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "northstar", "stdio", "--tenant", TENANT, "--user", USER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=gateway_env(data_dir))
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.not_json: list[bytes] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(
            line.decode("utf-8", "replace") for line in self.proc.stderr or ()), daemon=True).start()
        self.syncs = itertools.count()

    def _read(self) -> None:
        for raw in self.proc.stdout or ():
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self.not_json.append(raw)

    def exchange(self, line: bytes) -> list[dict[str, Any]]:
        """Send ``line`` then a ping; every message up to the ping's reply."""
        sync = f"sync-{next(self.syncs)}"
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n" + json.dumps(rpc("ping", rid=sync)).encode() + b"\n")
        self.proc.stdin.flush()
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1].get("id") != sync:
            try:
                seen.append(self.lines.get(timeout=30))
            except queue.Empty:
                raise AssertionError("no reply from stdio:\n" + "".join(self.stderr[-40:])) from None
        assert not self.not_json, self.not_json[:3]
        return seen

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_fuzz_stdio(tmp_path: Path) -> None:
    """Generated lines (messages, batches, junk bytes) to one stdio process after its handshake:
    each line is followed by a ping that must be answered; the process exits 0 at EOF."""
    stdio = Stdio(tmp_path)
    try:
        init = stdio.exchange(json.dumps(rpc("initialize", init_params(), "init")).encode())
        assert any(m.get("id") == "init" and "result" in m for m in init), init
        stdio.exchange(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())

        @FUZZ
        @given(line=bodies.map(lambda b: json.dumps(b).encode())
               | st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ")))
        def run(line: bytes) -> None:
            count("stdio")
            check_stream_messages(stdio.exchange(line))
            assert stdio.proc.poll() is None, "the stdio process exited"

        run()
    finally:
        code = stdio.close()
    assert code == 0 and "Traceback" not in "".join(stdio.stderr), "".join(stdio.stderr)[-3000:]


# -- integers beyond 64 bits: refused as ids, answered exactly as arguments ------------------------
@pytest.mark.parametrize("door", ["2026", "stateless", "session"])
@pytest.mark.parametrize("rid", [2**64, -(2**63) - 1])
def test_tools_call_with_an_integer_beyond_64_bits(tmp_path: Path, client: httpx2.Client, door: str,
                                                   rid: int) -> None:
    """An id that cannot be echoed is refused before the call runs; the same integer inside the
    arguments (``echo.ping`` echoes ``data``) is answered exactly, never an empty 500. On a gateway
    of its own, so a traceback cannot hide in the shared one's log."""
    with keyed_gateway(tmp_path) as (gw, keys):
        session = Session(client, gw.url, TENANT, USER, auth=bearer(keys["user"])).open() if door == "session" else None

        def post(body: dict[str, Any]) -> httpx2.Response:
            if session is not None:
                return session.post(body)
            path, headers = door_headers(door, keys["user"], body)
            return client.post(f"{gw.url}{path}", content=json.dumps(body).encode(), headers=headers)

        refused = post(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "m"}, "_meta": META}, rid))
        check_mcp_http(refused)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == -32600, refused.text
        echoed = post(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "m", "data": {"n": rid}},
                                         "_meta": META}, 7))
        check_mcp_http(echoed)
        assert echoed.status_code == 200, echoed.text
        assert json.loads(echoed.text)["result"]["structuredContent"]["data"] == {"n": rid}
    traceback_free(gw)


def test_fuzz_figures() -> None:
    """The figures in docs/reliability.md: inputs per door in this run."""
    print("\nJSON-RPC fuzz inputs per door: " + json.dumps(dict(sorted(COUNTS.items()))))
    for door, n in COUNTS.items():
        assert n >= EXAMPLES, (door, n)
