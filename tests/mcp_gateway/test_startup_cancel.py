"""A call that waits for start-up and is cancelled never runs; one that is not runs once ready.

``northstar stdio`` answers ``initialize`` before the runtime is ready, and its other handlers
wait for it (``McpFace.until_ready``). Here the wait is held open on purpose: the face gets a
``ready`` event of the test's own, over a real runtime and the SDK's own client and protocol
engine (in process). The test cancels a slow call while it is parked in that wait (the SDK
client sends ``notifications/cancelled``), then lets start-up finish: the call never reached
the gate chain, so the tool never ran and there is no audit record of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import Client

from northstar.common.config import Settings
from northstar.common.identity import RequestContextBuilder
from northstar.mcp_gateway.transports.mcp_face import McpFace
from northstar.runtime import Runtime

IDENTITY = RequestContextBuilder().from_stdio(tenant="t-start", user="u", mode=None)


async def until(check: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not check():
            await trio.sleep(0.01)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path, enable_diagnostics=True, log_level="WARNING"))
    with trio.fail_after(60):
        async with rt.running():
            yield rt


def diagnostics_processed(rt: Runtime) -> int:
    assert rt.tools_supervisor is not None
    ref: Any = rt.tools_supervisor.get("tool:diagnostics")
    stats = ref.stats()
    return int(stats.processed + stats.in_flight)


async def test_a_call_cancelled_while_waiting_for_startup_never_runs(runtime: Runtime) -> None:
    starting = trio.Event()  # set when "start-up" is over
    face = McpFace(runtime.services.gateway, ready=starting, stdio_context=IDENTITY)
    async with Client(face.server, mode="legacy", cache=None) as client:
        async with trio.open_nursery() as nursery:
            call = trio.CancelScope()

            async def slow_call() -> None:
                with call:
                    await client.call_tool("diagnostics__sleep", {"seconds": 60})

            nursery.start_soon(slow_call)
            await until(lambda: starting.statistics().tasks_waiting == 1)  # parked in until_ready
            call.cancel()  # the client gives up: notifications/cancelled
            await until(lambda: starting.statistics().tasks_waiting == 0)  # the handler is gone
        starting.set()
        after = await client.call_tool("echo__ping", {"message": "after start-up"})
        assert not after.is_error
    assert diagnostics_processed(runtime) == 0  # the tool never saw it
    entries = await runtime.services.audit.query(tenant="t-start")
    assert [e.record.get("tool") for e in entries] == ["echo"]  # no decision, so no record


async def test_a_call_waiting_for_startup_runs_once_ready(runtime: Runtime) -> None:
    starting = trio.Event()
    face = McpFace(runtime.services.gateway, ready=starting, stdio_context=IDENTITY)
    async with Client(face.server, mode="legacy", cache=None) as client:
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def call() -> None:
                results.append(await client.call_tool("diagnostics__sleep", {"seconds": 0}))

            nursery.start_soon(call)
            await until(lambda: starting.statistics().tasks_waiting == 1)
            starting.set()
        assert not results[0].is_error and results[0].structured_content == {"slept": 0.0}
    entries = await runtime.services.audit.query(tenant="t-start")
    assert [(e.record.get("tool"), e.record.get("outcome")) for e in entries] == [("diagnostics", "ok")]
