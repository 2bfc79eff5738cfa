"""The SDK's SSE streams ping at the interval ``northstar.compat.sse_starlette`` sets: the SDK
still builds its ``EventSourceResponse`` without ``ping=``, and sse-starlette still reads the
class default. Times are trio's virtual clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from mcp.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from sse_starlette import EventSourceResponse

from northstar.compat import sse_starlette
from tests.compat.asgi import INITIALIZE, Response, call, mcp_headers, receive_of, scope_of, user

INTERVAL = 7
ALICE = user("alice")


def test_the_installed_sse_starlette_is_the_verified_one() -> None:
    problems = sse_starlette.unverified()
    assert not problems, "\n".join(problems)


@pytest.fixture
def interval() -> Iterator[int]:
    previous = sse_starlette.ping_interval()
    sse_starlette.set_ping_interval(INTERVAL)
    try:
        yield INTERVAL
    finally:
        sse_starlette.set_ping_interval(previous)


async def empty() -> Any:
    return
    yield


def test_a_response_built_without_ping_takes_the_interval(interval: int) -> None:
    assert EventSourceResponse(content=empty()).ping_interval == interval
    assert EventSourceResponse(content=empty(), ping=3).ping_interval == 3  # the public way still wins


def test_the_interval_is_whole_seconds_and_at_least_one() -> None:
    previous = sse_starlette.ping_interval()
    try:
        sse_starlette.set_ping_interval(0.2)
        assert sse_starlette.ping_interval() == 1
        sse_starlette.set_ping_interval(2.9)
        assert sse_starlette.ping_interval() == 2
    finally:
        sse_starlette.set_ping_interval(previous)


async def first_ping_after(response: Response, opened_at: float) -> float:
    return await response.wait_for(b": ping") - opened_at


async def test_the_legacy_sse_stream_pings_at_the_interval(interval: int, autojump_clock: trio.abc.Clock) -> None:
    transport = SseServerTransport("/messages/")
    response = Response()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def stream() -> None:
                async with transport.connect_sse(scope_of("GET", "/sse", principal=ALICE), receive_of(b""),
                                                 response.send):
                    await trio.sleep_forever()

            opened_at = trio.current_time()
            nursery.start_soon(stream)
            assert interval <= await first_ping_after(response, opened_at) < interval + 1
            nursery.cancel_scope.cancel()


async def test_the_streamable_get_stream_pings_at_the_interval(interval: int, autojump_clock: trio.abc.Clock) -> None:
    manager = StreamableHTTPSessionManager(Server("t"), json_response=True)
    response = Response()
    with trio.fail_after(60):
        async with manager.run(), trio.open_nursery() as nursery:
            opened = await call(manager.handle_request, "POST", "/mcp", body=INITIALIZE, headers=mcp_headers(),
                                principal=ALICE)
            headers = {"accept": "text/event-stream", "mcp-session-id": opened.headers["mcp-session-id"],
                       "mcp-protocol-version": mcp_headers()["mcp-protocol-version"]}
            opened_at = trio.current_time()
            nursery.start_soon(manager.handle_request, scope_of("GET", "/mcp", headers=headers, principal=ALICE),
                               receive_of(b""), response.send)
            await response.started.wait()
            assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")
            assert interval <= await first_ping_after(response, opened_at) < interval + 1
            nursery.cancel_scope.cancel()
