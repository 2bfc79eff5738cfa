"""The lean lane: calls to a Streamable HTTP upstream that answers JSON, on a real port.

The upstream (the SDK's low-level server with ``json_response=True``) records the JSON-RPC id
of every call it runs: the lane's ids are ``northstar-<n>``, the SDK session's are integers, so
each test knows which path a call took. Everything the SDK path guarantees holds here too:
headers with secrets, faithful results, the upstream's error text, output schemas, the size
cap, cancellation sent upstream, timeouts, and a connection lost mid-call.
"""

from __future__ import annotations

import functools
import hashlib
import json
from types import MappingProxyType

import pytest
import trio

from northstar.common.errors import UpstreamFailed, UpstreamTimeout, UpstreamUnavailable
from northstar.upstreams.lean import call_body, proxied
from tests.upstreams.kit import LOWLEVEL, SECRET, events, http_server, http_spec, ready, running_host, text_of


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def call_ids(seen: list[dict[str, object]], tool: str) -> list[object]:
    return [e.get("requestId") for e in seen if e.get("event") == "call" and e.get("tool") == tool]


async def test_json_upstream_calls_take_the_lean_lane_with_the_same_answers() -> None:
    async with http_server(LOWLEVEL, "http-json") as server, running_host() as host:
        spec = http_spec("lean", f"http://127.0.0.1:{server.port}/mcp", max_result_bytes=4096)
        handle = await host.start(spec)
        await ready(handle)
        auth = (await handle.call_inline("header_hash", {"name": "authorization"})).unwrap()
        assert text_of(auth) == sha(f"Bearer {SECRET}")
        assert text_of((await handle.call_inline("echo", {"text": "lean"})).unwrap()) == "lean"
        added = (await handle.call_inline("add", {"a": 2, "b": 3})).unwrap()
        assert added["structuredContent"] == {"sum": 5} and added["isError"] is False
        media = (await handle.call_inline("media", {})).unwrap()
        assert [b["type"] for b in media["content"]] == ["image", "resource"]
        failed = (await handle.call_inline("fail", {})).unwrap()
        assert failed["isError"] is True and text_of(failed) == "the tool failed on purpose"
        err = (await handle.call_inline("rpc_error", {"text": "quota exceeded"})).error
        assert isinstance(err, UpstreamFailed) and err.code == "upstream_error"
        assert "upstream says no: quota exceeded" in err.message and err.details["upstream_code"] == -32050
        bad = (await handle.call_inline("bad_output", {})).error
        assert isinstance(bad, UpstreamFailed) and "output schema" in bad.message
        big = (await handle.call_inline("big", {"size": 10_000})).error
        assert isinstance(big, UpstreamFailed) and big.details["limit"] == 4096
        seen = await events(handle)
        for tool in ("echo", "add", "media", "fail", "rpc_error", "bad_output", "big"):
            assert all(str(i).startswith("northstar-") for i in call_ids(seen, tool)), (tool, seen)

        async def sink(progress: float, total: float | None, message: str | None) -> None:
            pass

        await handle.call_inline("echo", {"text": "with a relay"}, progress=sink)
        relayed = [i for i in call_ids(await events(handle), "echo") if isinstance(i, int)]
        assert len(relayed) == 1  # a call that relays progress takes the SDK's session
        assert handle.status().state == "ready"


async def test_lean_calls_cancelled_or_late_are_cancelled_upstream() -> None:
    async with http_server(LOWLEVEL, "http-json") as server, running_host() as host:
        handle = await host.start(http_spec("lean", f"http://127.0.0.1:{server.port}/mcp"))
        await ready(handle)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(handle.call_inline, "slow", {"seconds": 600}))
                while not call_ids(await events(handle), "slow"):
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
            (slow_id,) = call_ids(await events(handle), "slow")
            while not any(e["event"] == "cancelled" and e["requestId"] == slow_id for e in await events(handle)):
                await trio.lowlevel.checkpoint()
        late = (await handle.call_inline("slow", {"seconds": 600}, timeout_s=0.5)).error
        assert isinstance(late, UpstreamTimeout)
        with trio.fail_after(30):
            while sum(e["event"] == "cancelled" for e in await events(handle)) < 2:
                await trio.lowlevel.checkpoint()
        assert text_of((await handle.call_inline("echo", {"text": "still fine"})).unwrap()) == "still fine"


async def test_lean_upstream_killed_mid_call_then_back() -> None:
    async with running_host() as host:
        async with http_server(LOWLEVEL, "http-json") as server:
            port = server.port
            handle = await host.start(http_spec("lean", f"http://127.0.0.1:{port}/mcp", call_timeout_s=5.0))
            await ready(handle)
            error = (await handle.call_inline("crash", {})).error
            assert isinstance(error, UpstreamUnavailable) and "connection was lost" in error.message, error
        async with http_server(LOWLEVEL, "http-json", str(port)):
            await ready(handle, timeout=90)
            assert text_of((await handle.call_inline("echo", {"text": "back"})).unwrap()) == "back"


async def test_an_upstream_answering_sse_only_refuses_the_lane_and_gets_the_sdk_path() -> None:
    async with http_server(LOWLEVEL, "http") as server, running_host() as host:
        handle = await host.start(http_spec("sse-only", f"http://127.0.0.1:{server.port}/mcp"))
        await ready(handle)
        for text in ("one", "two"):
            assert text_of((await handle.call_inline("echo", {"text": text})).unwrap()) == text
        assert all(isinstance(i, int) for i in call_ids(await events(handle), "echo"))


def test_the_lane_leaves_proxied_upstreams_to_the_sdk_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not proxied("http://tools.internal.example/mcp")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert proxied("https://tools.internal.example/mcp") and not proxied("http://tools.internal.example/mcp")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert not proxied("https://tools.internal.example/mcp")


def test_a_call_body_carries_any_json_arguments() -> None:
    body = json.loads(call_body("northstar-1", "add", MappingProxyType({"a": 2**70, "b": "é"})))
    assert body == {"jsonrpc": "2.0", "id": "northstar-1", "method": "tools/call",
                    "params": {"name": "add", "arguments": {"a": 2**70, "b": "é"}}}
