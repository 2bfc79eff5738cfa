"""Upstreams on real ports: Streamable HTTP (low-level Server), legacy SSE (MCPServer), and FastMCP."""

from __future__ import annotations

import functools
import hashlib

import trio

from northstar.common.errors import UpstreamUnavailable
from northstar.upstreams import ToolsChanged, UpstreamSpec, generate_draft
from tests.upstreams.kit import (
    LOWLEVEL,
    SECRET,
    SERVERS,
    events,
    http_server,
    http_spec,
    ready,
    running_host,
    stdio_spec,
    text_of,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_streamable_http_headers_calls_cancel_and_list_changed() -> None:
    changed = trio.Event()

    def on_event(event: ToolsChanged) -> None:
        if event.reason == "list_changed":
            changed.set()

    async with http_server(LOWLEVEL, "http") as server, running_host() as host:
        handle = await host.start(http_spec("remote", f"http://127.0.0.1:{server.port}/mcp"), on_event=on_event)
        await ready(handle)
        auth = (await handle.call("header_hash", {"name": "authorization"})).unwrap()
        assert text_of(auth) == sha(f"Bearer {SECRET}")
        team = (await handle.call("header_hash", {"name": "x-team"})).unwrap()
        assert text_of(team) == sha("platform")
        assert text_of((await handle.call("echo", {"text": "over http"})).unwrap()) == "over http"

        progressed = trio.Event()

        async def first_step(progress: float, total: float | None, message: str | None) -> None:
            progressed.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(handle.call, "slow", {"seconds": 600}, progress=first_step))
                await progressed.wait()
                nursery.cancel_scope.cancel()
        with trio.fail_after(30):  # each round trip gives the upstream time to record the notification
            while not any(e["event"] == "cancelled" for e in await events(handle)):
                await trio.lowlevel.checkpoint()
        await handle.call("set_description", {"text": "Echo over HTTP, changed."})
        with trio.fail_after(30):
            await changed.wait()
        assert handle.status().drift == {"changed": ["echo"], "removed": [], "added": []}


async def test_http_upstream_killed_mid_call_then_back_on_the_same_port() -> None:
    async with running_host() as host:
        async with http_server(LOWLEVEL, "http") as server:
            port = server.port
            spec = http_spec("remote", f"http://127.0.0.1:{port}/mcp", call_timeout_s=5.0)
            handle = await host.start(spec)
            await ready(handle)
            started = trio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                started.set()

            async with trio.open_nursery() as nursery:
                results = []

                async def slow_call() -> None:
                    results.append(await handle.call("slow", {"seconds": 600}, progress=on_progress))

                nursery.start_soon(slow_call)
                with trio.fail_after(30):
                    await started.wait()
                server.kill()
            error = results[0].error
            assert isinstance(error, UpstreamUnavailable) and "connection was lost" in error.message, error
            refused = (await handle.call("echo", {"text": "x"})).error  # nothing listens: refused, not hung
            assert isinstance(refused, UpstreamUnavailable)
        async with http_server(LOWLEVEL, "http", str(port)):
            await ready(handle, timeout=90)  # the breaker's probe reconnects once the port answers
            assert text_of((await handle.call("echo", {"text": "back"})).unwrap()) == "back"


async def test_legacy_sse_upstream_built_with_mcpserver() -> None:
    async with http_server(str(SERVERS / "highlevel.py"), "sse") as server, running_host() as host:
        spec = UpstreamSpec.model_validate({
            "name": "weather", "transport": "sse", "url": f"http://127.0.0.1:{server.port}/sse",
            "headers": {"Authorization": "Bearer {secret:token}"}, "secrets": {"token": SECRET},
            "connect_timeout_s": 20.0})
        handle = await host.start(spec)
        await ready(handle)
        tools = (await handle.tools()).unwrap().tools
        assert tools["get_weather"].read_only and tools["get_weather"].output_schema is not None
        weather = (await handle.call("get_weather", {"city": "Oslo"})).unwrap()
        assert weather["structuredContent"] == {"city": "Oslo", "celsius": 21.5}
        auth = (await handle.call("header_hash", {"name": "authorization"})).unwrap()
        assert text_of(auth) == sha(f"Bearer {SECRET}")
        seen: list[float] = []

        async def sink(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        assert text_of((await handle.call("wait", {"seconds": 0.1}, progress=sink)).unwrap()) == "waited"
        assert seen


async def test_fastmcp_upstream_over_stdio_becomes_a_draft() -> None:
    async with running_host() as host:
        spec = stdio_spec("docs", str(SERVERS / "fast.py"), env={}, secrets={})
        handle = await host.start(spec)
        await ready(handle)
        tools = (await handle.tools()).unwrap().tools
        assert set(tools) >= {"search_docs", "drop_index", "crunch"}
        found = (await handle.call("search_docs", {"query": "pins", "limit": 2})).unwrap()
        assert found["structuredContent"] == {"result": ["pins #0", "pins #1"]}
        seen: list[float] = []

        async def sink(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        assert "crunched 3" in text_of((await handle.call("crunch", {"steps": 3}, progress=sink)).unwrap())
        draft = generate_draft("docs", tools)
        scopes = {s["name"]: s for s in draft.spec["scopes"]}
        assert [o["name"] for o in scopes["docs.read"]["operations"]] == ["crunch", "search_docs"]
        drop = scopes["docs.write"]["operations"][0]
        assert drop["wraps"] == "upstream:docs/drop_index" and drop["annotations"]["destructive"] is True
        assert scopes["docs.write"]["firearm"] == "firearm.docs.write" and not draft.problems
