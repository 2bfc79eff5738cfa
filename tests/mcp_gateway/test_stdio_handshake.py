"""The stdio ``initialize`` answered before start-up is the SDK session's own answer, byte
for byte; every other first line is left to the SDK; the stdio path stays light."""

from __future__ import annotations

import io
import itertools
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import version as sdk_versions

from northstar.common import errors as E
from northstar.common.identity import RequestContextBuilder
from northstar.compat import mcp_sdk
from northstar.mcp_gateway.protocol import jsonrpc
from northstar.mcp_gateway.transports.mcp_face import McpFace
from northstar.mcp_gateway.transports.stdio import handshake as hs
from northstar.mcp_gateway.transports.stdio.lines import AnswerMalformedLines, CheckedLines, SkipEarlyAnswer
from tests.harness import gateway_env

LIMITS = {"max_bytes": 4 * 1024 * 1024, "max_depth": 64, "max_items": 100_000}
SPAWN_TIMEOUT_S = 60.0
# The client below always sends its first line: wait for it as long as it takes (bounded).
STDIO_ENV = {"NORTHSTAR_LOG_LEVEL": "DEBUG", "NORTHSTAR_STDIO_FIRST_LINE_WAIT_S": "30"}


def line_of(msg: Any) -> bytes:
    return json.dumps(msg).encode() + b"\n"


def initialize(rpc_id: Any = 0, version: str = "2025-11-25", caps: Any = None, info: Any = None) -> dict[str, Any]:
    params = {"protocolVersion": version, "capabilities": {} if caps is None else caps,
              "clientInfo": info or {"name": "client", "version": "1"}}
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "initialize", "params": params}


VERSIONS = [*sdk_versions.SUPPORTED_PROTOCOL_VERSIONS, "2023-01-01", "2099-12-31"]
IDS = [0, 1, 7, 2**53 - 1, "0", "abc", "a.b:c-d_E9", "x" * 64]
CAPABILITIES = [
    {},
    {"roots": {}}, {"roots": {"listChanged": True}}, {"roots": {"listChanged": False}},
    {"sampling": {}}, {"sampling": {"context": {}, "tools": {}}},
    {"elicitation": {}}, {"elicitation": {"form": {}}}, {"elicitation": {"form": {}, "url": {}}},
    {"experimental": {}}, {"experimental": {"x": {}, "y": {"a": 1, "b": "s", "c": True, "d": None}}},
    {"extensions": {"io.modelcontextprotocol/ui": {}}},
    {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {"form": {}}, "experimental": {"x": {}}},
]
CLIENT_INFOS = [
    {"name": "client", "version": "1"},
    {"name": "claude-ai", "version": "0.1.0", "title": "Claude", "description": "d", "websiteUrl": "https://x.test"},
    {"name": "ünïcode ✨", "version": ""},
]
ACCEPTED = (
    [initialize(version=v) for v in VERSIONS]
    + [initialize(rpc_id=i) for i in IDS]
    + [initialize(caps=c) for c in CAPABILITIES]
    + [initialize(info=i) for i in CLIENT_INFOS]
)


async def sdk_answers(data: bytes, *, max_bytes: int = LIMITS["max_bytes"], max_depth: int = LIMITS["max_depth"],
                      max_items: int = LIMITS["max_items"]) -> bytes:
    """What the stdio transport writes for ``data``: the server as ``northstar stdio`` builds it."""
    face = McpFace(None, ready=trio.Event())
    lines = CheckedLines(io.BytesIO(data), max_bytes, max_json_depth=max_depth, max_json_items=max_items)
    out = io.StringIO()
    with trio.fail_after(30):
        async with stdio_server(stdin=anyio.wrap_file(lines), stdout=anyio.wrap_file(out)) as (read, write):  # type: ignore[arg-type]
            await face.server.run(AnswerMalformedLines(read, write, lines), write, face.init_options())
    return out.getvalue().encode()


def test_constants_are_the_sdks() -> None:
    assert hs.HANDSHAKE_PROTOCOL_VERSIONS == sdk_versions.HANDSHAKE_PROTOCOL_VERSIONS
    assert hs.LATEST_HANDSHAKE_VERSION == sdk_versions.LATEST_HANDSHAKE_VERSION
    # An SDK upgrade must re-verify the early answer (the tests below), then update
    # northstar.compat.mcp_sdk.VERIFIED (tests/compat/test_mcp_sdk.py checks the versions).
    assert hs.sdk_is_verified(), mcp_sdk.unverified()


@pytest.mark.parametrize("msg", ACCEPTED, ids=lambda m: json.dumps(m["id"]) + json.dumps(m["params"])[:80])
async def test_the_early_answer_is_the_sdks(msg: dict[str, Any]) -> None:
    data = line_of(msg)
    found = hs.answer_for(data, **LIMITS)
    assert found is not None, "this shape should be answered early"
    rpc_id, answer, _ = found
    assert rpc_id == msg["id"] and type(rpc_id) is type(msg["id"])
    assert answer == await sdk_answers(data)


async def test_compact_and_reordered_lines_too() -> None:
    msg = initialize(rpc_id="r1", version="2025-06-18", caps={"roots": {"listChanged": True}})
    for text in (json.dumps(msg, separators=(",", ":")), json.dumps(dict(reversed(list(msg.items())))),
                 " " + json.dumps(msg, indent=None) + " \r"):
        data = text.encode() + b"\n"
        found = hs.answer_for(data, **LIMITS)
        assert found is not None
        assert found[1] == await sdk_answers(data)


def _with(msg: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(msg))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


BASE = initialize()
LEFT_TO_THE_SDK: dict[str, bytes] = {
    "another method": line_of({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    "a notification": line_of({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    "a batch": line_of([BASE]),
    "no id": line_of({k: v for k, v in BASE.items() if k != "id"}),
    "bool id": line_of(_with(BASE, ("id",), True)),
    "float id": b'{"jsonrpc":"2.0","id":1.0,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
                b'"capabilities":{},"clientInfo":{"name":"c","version":"1"}}}\n',
    "negative id": line_of(_with(BASE, ("id",), -1)),
    "huge id": line_of(_with(BASE, ("id",), 2**53)),
    "odd id text": line_of(_with(BASE, ("id",), "a b")),
    "jsonrpc 1.0": line_of(_with(BASE, ("jsonrpc",), "1.0")),
    "an extra member": line_of({**BASE, "extra": 1}),
    "_meta": line_of(_with(BASE, ("params", "_meta"), {"progressToken": 1})),
    "no protocolVersion": line_of({**BASE, "params": {k: v for k, v in BASE["params"].items()
                                                      if k != "protocolVersion"}}),
    "version not a date": line_of(_with(BASE, ("params", "protocolVersion"), "latest")),
    "version a number": line_of(_with(BASE, ("params", "protocolVersion"), 2025)),
    "no clientInfo.version": line_of(_with(BASE, ("params", "clientInfo"), {"name": "c"})),
    "clientInfo icons": line_of(_with(BASE, ("params", "clientInfo", "icons"), [{"src": "https://x.test/i.png"}])),
    "clientInfo not text": line_of(_with(BASE, ("params", "clientInfo", "version"), 1)),
    "roots not an object": line_of(_with(BASE, ("params", "capabilities"), {"roots": 5})),
    "roots listChanged text": line_of(_with(BASE, ("params", "capabilities"), {"roots": {"listChanged": "yes"}})),
    "tasks": line_of(_with(BASE, ("params", "capabilities"), {"tasks": {"list": {}}})),
    "unknown capability": line_of(_with(BASE, ("params", "capabilities"), {"telepathy": {}})),
    "sampling member set": line_of(_with(BASE, ("params", "capabilities"), {"sampling": {"tools": {"x": 1}}})),
    "experimental nested": line_of(_with(BASE, ("params", "capabilities"), {"experimental": {"x": {"y": {}}}})),
    "experimental float": line_of(_with(BASE, ("params", "capabilities"), {"experimental": {"x": {"y": 0.5}}})),
    "NaN": line_of(BASE).replace(b'"capabilities": {}', b'"capabilities": {"experimental": {"x": {"y": NaN}}}'),
    "duplicate key": line_of(BASE).replace(b'"id": 0', b'"id": 0, "id": 1'),
    "lone surrogate": line_of(_with(BASE, ("params", "clientInfo", "name"), "x")).replace(b'"x"', b'"\\ud800"'),
    "not UTF-8": line_of(_with(BASE, ("params", "clientInfo", "name"), "x")).replace(b'"x"', b'"\xff"'),
    "not JSON": b"{initialize\n",
    "no newline": line_of(BASE)[:-1],
    "end of input": b"",
}


@pytest.mark.parametrize("name", sorted(LEFT_TO_THE_SDK))
def test_other_first_lines_are_left_to_the_sdk(name: str) -> None:
    assert hs.answer_for(LEFT_TO_THE_SDK[name], **LIMITS) is None


@pytest.mark.parametrize("msg", [BASE, ACCEPTED[-1 - len(CLIENT_INFOS)]])
def test_the_limits_are_the_stdio_checks(msg: dict[str, Any]) -> None:
    """For every depth / item limit, answered early exactly when the stdio checks pass it."""
    data = line_of(msg)
    for depth, items in itertools.product(range(1, 7), range(1, 40)):
        try:
            jsonrpc.check_mcp_body(data, depth, items)
            passes = True
        except (E.InvalidRequest, E.InvalidJson):
            passes = False
        early = hs.answer_for(data, max_bytes=LIMITS["max_bytes"], max_depth=depth, max_items=items)
        assert (early is not None) == passes, (depth, items)
    assert hs.answer_for(data, max_bytes=len(data), max_depth=64, max_items=100_000) is not None
    assert hs.answer_for(data, max_bytes=len(data) - 1, max_depth=64, max_items=100_000) is None


def test_read_first_line_waits_only_as_long_as_told() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as stdin, os.fdopen(w, "wb") as client:
        assert hs.read_first_line(stdin, 1024, wait_s=0) is None  # nothing sent yet: nothing read
        client.write(b'{"a":1}\n{"b":2}\n{"c"')
        client.flush()
        reader = hs.EarlyLines(stdin, 1024)
        assert reader.next_line(5) == b'{"a":1}\n'
        assert reader.next_line(5) == b'{"b":2}\n'
        assert reader.next_line(0) is None  # a partial line is not a line
        assert reader.read == b'{"a":1}\n{"b":2}\n{"c"'  # every byte taken, for the transport
        client.close()
        assert reader.next_line(5) is None  # the partial line ended by end of input: the transport's
        assert hs.read_first_line(stdin, 1024, wait_s=5) == b""
    assert hs.read_first_line(io.BytesIO(b"x\n"), 1024, wait_s=0) is None  # cannot be polled


def test_answer_early_writes_once_and_keeps_the_line() -> None:
    r, w = os.pipe()
    data = line_of(initialize(rpc_id=3))
    with os.fdopen(r, "rb") as stdin, os.fdopen(w, "wb") as client:
        client.write(data + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        client.flush()
        out = io.BytesIO()
        first = hs.answer_early(stdin, out, **LIMITS, wait_s=5)
    assert first is not None and first.read.startswith(data) and first.rpc_id == 3
    assert out.getvalue() == first.answer == hs.answer_for(data, **LIMITS)[1]  # type: ignore[index]


class EndInputOnReply(io.StringIO):
    """A stdout that ends the client's input once the reply to ``rpc_id`` is written."""

    def __init__(self, rpc_id: int, client: Any) -> None:
        super().__init__()
        self.rpc_id, self.client = rpc_id, client

    def write(self, text: str) -> int:
        n = super().write(text)
        if json.loads(text).get("id") == self.rpc_id:
            self.client.close()
        return n


async def test_the_session_still_sees_the_first_line_and_its_answer_is_dropped() -> None:
    data = line_of(initialize(rpc_id=5, version="2025-03-26"))
    answer = hs.answer_for(data, **LIMITS)
    assert answer is not None
    face = McpFace(None, ready=trio.Event(), stdio_context=RequestContextBuilder().from_stdio())
    r, w = os.pipe()
    with os.fdopen(r, "rb") as stdin, os.fdopen(w, "wb") as client:
        # An uninitialized session would refuse resources/read as "Invalid request parameters".
        client.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
                     b'{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"file:///x"}}\n')
        client.flush()
        lines = CheckedLines(stdin, 1 << 20, already_read=data)
        out = EndInputOnReply(6, client)
        with trio.fail_after(30):
            async with stdio_server(stdin=anyio.wrap_file(lines), stdout=anyio.wrap_file(out)) as (read, write):  # type: ignore[arg-type]
                skip = SkipEarlyAnswer(write, 5, answer[1])
                await face.server.run(AnswerMalformedLines(read, skip, lines), skip, face.init_options())
    assert not skip.pending
    replies = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(m["id"], m["error"]["message"]) for m in replies] == [(6, "unknown resource file:///x")]


async def test_skip_early_answer_drops_one_reply_and_reports_a_difference(caplog: pytest.LogCaptureFixture) -> None:
    send, receive = trio.open_memory_channel[Any](10)
    answer = hs.initialize_response(1, "2025-11-25")
    skip = SkipEarlyAnswer(send, 1, answer)
    other = SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id="1", result={}))
    await skip.send(other)  # "1" is not 1
    await skip.send(SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=1, result={})))  # differs: dropped, logged
    again = SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=1, result={}))
    await skip.send(again)  # only once
    assert [receive.receive_nowait(), receive.receive_nowait()] == [other, again]
    assert any("differs from the SDK" in r.getMessage() for r in caplog.records)


# -- the real process ----------------------------------------------------------------------
def spawn_stdio(data_dir: Path, code: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    head = [sys.executable, "-c", code, "stdio"] if code else [sys.executable, "-m", "northstar", "stdio"]
    return subprocess.Popen([*head, "--tenant", "t1", "--user", "u1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=gateway_env(data_dir, {**STDIO_ENV, **(env or {})}))


# Runs ``northstar stdio`` in a process that records which modules were loaded when the
# initialize answer was written, and after a whole session.
PROBE = textwrap.dedent("""
    import json, sys
    from northstar import cli
    from northstar.mcp_gateway.transports.stdio import handshake as stdio_handshake
    WATCH = ("mcp", "mcp_types", "anyio", "northstar.runtime", "northstar.mcp_gateway.transports.mcp_face",
             "hypercorn", "quart", "quart_trio", "asyncpg", "trio_asyncio", "northstar.mcp_gateway.server",
             "northstar.mcp_gateway.transports.http.fastpath", "northstar.mcp_gateway.transports.rest")
    seen = {}
    def loaded():
        return sorted(m for m in WATCH if m in sys.modules)
    answer_early = stdio_handshake.answer_early
    def probe(*args, **kwargs):
        seen["before_answer"] = loaded()
        return answer_early(*args, **kwargs)
    stdio_handshake.answer_early = probe
    sys.argv[0] = "northstar"
    code = cli.main(sys.argv[1:])
    seen["after_session"] = loaded()
    sys.stderr.write("PROBE " + json.dumps(seen) + "\\n")
    sys.exit(code)
""")


def session_over(proc: subprocess.Popen[bytes], init: bytes) -> tuple[list[dict[str, Any]], str]:
    """initialize; once answered, initialized and tools/list; once answered, end of input.
    Returns (every stdout message, stderr)."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr
    got: queue.Queue[bytes] = queue.Queue()
    errors: list[bytes] = []
    threading.Thread(target=lambda: [got.put(raw) for raw in stdout], daemon=True).start()
    err_reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
    err_reader.start()
    messages: list[dict[str, Any]] = []

    def until_reply(rpc_id: int) -> None:
        while not any(m.get("id") == rpc_id for m in messages):
            messages.append(json.loads(got.get(timeout=SPAWN_TIMEOUT_S)))  # stdout carries only JSON-RPC

    try:
        proc.stdin.write(init)
        proc.stdin.flush()
        until_reply(0)
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
                         b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n')
        proc.stdin.flush()
        until_reply(1)
        proc.stdin.close()
        code = proc.wait(timeout=SPAWN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    err_reader.join(timeout=SPAWN_TIMEOUT_S)
    while not got.empty():
        messages.append(json.loads(got.get()))
    err = b"".join(errors).decode("utf-8", "replace")
    assert code == 0, err[-3000:]
    return messages, err


def test_stdio_answers_initialize_before_loading_the_sdk_and_never_loads_the_web_stack(tmp_path: Path) -> None:
    init = line_of(initialize(rpc_id=0, version="2025-06-18"))
    messages, err = session_over(spawn_stdio(tmp_path, PROBE), init)
    probe = json.loads(next(x for x in err.splitlines() if x.startswith("PROBE "))[6:])
    assert probe["before_answer"] == []  # neither the SDK nor the runtime yet
    assert "mcp" in probe["after_session"] and "northstar.runtime" in probe["after_session"]
    # no HTTP front, no PostgreSQL
    assert set(probe["after_session"]) <= {"mcp", "mcp_types", "anyio", "northstar.runtime",
                                           "northstar.mcp_gateway.transports.mcp_face"}, probe
    assert "initialize answered before start-up" in err
    assert "differs from the SDK" not in err
    replies = [m for m in messages if "id" in m]
    assert [m["id"] for m in replies] == [0, 1]  # one answer to initialize: the early one
    assert json.dumps(replies[0], separators=(",", ":")).encode() + b"\n" == hs.answer_for(init, **LIMITS)[1]  # type: ignore[index]
    assert "echo__ping" in {t["name"] for t in replies[1]["result"]["tools"]}


def test_a_first_line_it_does_not_answer_goes_to_the_sdk_unchanged(tmp_path: Path) -> None:
    init = line_of(_with(initialize(rpc_id=0), ("params", "capabilities"), {"tasks": {"list": {}}}))
    messages, err = session_over(spawn_stdio(tmp_path), init)
    assert "initialize answered before start-up" not in err
    replies = [m for m in messages if "id" in m]
    assert [m["id"] for m in replies] == [0, 1]
    assert replies[0]["result"]["protocolVersion"] == "2025-11-25"
    assert "echo__ping" in {t["name"] for t in replies[1]["result"]["tools"]}


async def test_an_sdk_client_over_stdio_end_to_end(tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "northstar", "stdio", "--tenant", "t2",
                                                                 "--user", "u2"],
                                   env=gateway_env(tmp_path, STDIO_ENV))
    # The child's stderr goes to a real file (a local one: opening it does not block).
    with open(tmp_path / "stderr.log", "w") as errlog, trio.fail_after(SPAWN_TIMEOUT_S):  # noqa: ASYNC230
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool("echo__ping", {"message": "hi"})
    assert "echo__ping" in {t.name for t in tools}
    assert not result.is_error and result.structured_content["message"] == "hi"
    err = (tmp_path / "stderr.log").read_text()
    assert "initialize answered before start-up" in err and "differs from the SDK" not in err
