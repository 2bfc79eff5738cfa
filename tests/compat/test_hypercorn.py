"""Hypercorn's internals that ``northstar.compat.hypercorn`` relies on still behave as verified.

A real Hypercorn server on a loopback port, served through :func:`compat.serve`, shows that
each connection gets the guarded server, that the hooks hear a connection open and its client
close it while a request still runs, and that the keep-alive timer's action closes an idle
connection. The write stall and the shielded close are driven on a socket pair, with trio's
virtual clock for the stall.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer

from northstar.compat import hypercorn as compat

WAIT_S = 10


def test_the_installed_hypercorn_is_the_verified_one() -> None:
    problems = compat.unverified()
    assert not problems, "\n".join(problems)


# -- a real server with recording hooks ------------------------------------------------------
class Timer:
    """A keep-alive timer that records what Hypercorn asks of it."""

    def __init__(self) -> None:
        self.task_group: Any = None
        self.action: Any = None
        self.idle = trio.Event()
        self.stops = 0

    async def restart(self, task_group: Any, action: Any) -> None:
        self.task_group, self.action = task_group, action
        self.idle.set()

    async def stop(self) -> None:
        self.stops += 1
        self.idle = trio.Event()


class Hooks:
    """The gateway's side of a connection, recorded."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []
        self.opened_at: list[tuple[Any, Any]] = []
        self.closed_at: list[tuple[Any, Any, Any]] = []
        self.closed_event = trio.Event()

    def keep_alive_timer(self) -> Timer:
        self.timers.append(Timer())
        return self.timers[-1]

    def opened(self, client: Any, server: Any) -> Any:
        self.opened_at.append((client, server))
        return f"token-{len(self.opened_at)}"

    def closed(self, client: Any, server: Any, token: Any) -> None:
        self.closed_at.append((client, server, token))
        self.closed_event.set()

    def express(self) -> None:
        return None  # every request through Hypercorn (the express lane has its own tests)


class App:
    """Answers ``/echo`` with nothing; holds ``/hold`` until released. Records every scope."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.holding = trio.Event()
        self.release = trio.Event()
        self.held_done = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.scopes.append(scope)
        if scope["path"] == "/hold":
            self.holding.set()
            with trio.CancelScope(shield=True):  # outlive the client: the request is still running
                await self.release.wait()
            self.held_done = True
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(app: App, hooks: Hooks) -> AsyncIterator[tuple[str, int]]:
    config = compat.GatewayConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.keep_alive_timeout = 3600  # the recording timer decides when an idle connection closes
    config.connection_hooks = hooks
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: compat.serve(app, config, shutdown_trigger=shutdown.wait,
                                                                     task_status=task_status))
        host, port = binds[0].removeprefix("http://").rsplit(":", 1)
        try:
            yield host, int(port)
        finally:
            app.release.set()
            shutdown.set()


async def request(stream: trio.SocketStream, path: str) -> None:
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())


async def read_response(stream: trio.SocketStream) -> bytes:
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        chunk = await stream.receive_some(65536)
        assert chunk, f"closed before the response was whole: {data!r}"
        data += chunk
    return data


async def test_hooks_see_a_connection_open_go_idle_and_be_closed_by_its_timer() -> None:
    app, hooks = App(), Hooks()
    with trio.fail_after(WAIT_S):
        async with serving(app, hooks) as (host, port):
            stream = await trio.open_tcp_stream(host, port)
            await request(stream, "/echo")
            assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
            # The connection's addresses are the ones its requests carry in their ASGI scope.
            scope = app.scopes[-1]
            assert hooks.opened_at == [(tuple(scope["client"]), tuple(scope["server"]))]
            timer = hooks.timers[-1]
            await timer.idle.wait()  # the response is out: Hypercorn armed the gateway's timer
            # A second request stops it; the next idle period arms it again.
            await request(stream, "/echo")
            await read_response(stream)
            assert timer.stops >= 1
            await timer.idle.wait()
            # The timer ran out: its action (``_idle_timeout`` -> ``_initiate_server_close``) closes.
            assert compat.spawn_if_open(timer.task_group, timer.action)
            assert await stream.receive_some(65536) == b""
            await hooks.closed_event.wait()
            assert hooks.closed_at == [(*hooks.opened_at[0], "token-1")]
            await stream.aclose()


async def test_the_end_of_reading_is_heard_while_a_request_still_runs() -> None:
    app, hooks = App(), Hooks()
    with trio.fail_after(WAIT_S):
        async with serving(app, hooks) as (host, port):
            stream = await trio.open_tcp_stream(host, port)
            await request(stream, "/hold")
            await app.holding.wait()
            await stream.aclose()  # the client goes away mid-request
            await hooks.closed_event.wait()  # heard at once (``_read_data`` ended) ...
            assert not app.held_done  # ... while the request is still running
            assert hooks.timers[-1].stops >= 1  # and the keep-alive timer is stopped with it
            app.release.set()


async def test_the_task_group_runs_timer_actions_until_the_connection_is_gone() -> None:
    ran: list[str] = []

    async def action() -> None:
        ran.append("ran")

    async with TaskGroup() as task_group:
        assert compat.spawn_if_open(task_group, action)
    assert ran == ["ran"]
    assert not compat.spawn_if_open(task_group, action)  # gone: nothing runs, nothing raises
    assert ran == ["ran"]


# -- the factory ---------------------------------------------------------------------------------
def test_only_gateway_configs_get_the_guarded_server() -> None:
    compat.install()
    compat.install()  # idempotent
    assert hypercorn_run.TCPServer is compat.connection_server
    guarded = compat.connection_server(None, compat.GatewayConfig(), None, {}, None)
    stock = compat.connection_server(None, Config(), None, {}, None)
    assert type(guarded) is compat.GuardedTCPServer
    assert type(stock) is TCPServer


def test_a_changed_hypercorn_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hypercorn_run, "TCPServer", object)
    verified = re.escape(f"verified against hypercorn {compat.VERIFIED['hypercorn']}")
    with pytest.raises(compat.IncompatibleLibrary, match=verified):
        compat.install()


# -- writes and closing, on a socket pair ------------------------------------------------------
class Protocol:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def handle(self, event: Any) -> None:
        self.events.append(event)


def guarded_pair(stall_s: float = 5.0) -> tuple[compat.GuardedTCPServer, socket.socket, Protocol]:
    mine, peer = socket.socketpair()
    mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    config = compat.GatewayConfig()
    config.write_stall_s = stall_s
    server = compat.GuardedTCPServer(None, config, None, {}, trio.SocketStream(trio.socket.from_stdlib_socket(mine)))
    protocol = Protocol()
    server.protocol = protocol  # type: ignore[assignment]
    return server, peer, protocol


async def test_a_write_the_client_does_not_read_closes_after_the_stall(autojump_clock: trio.abc.Clock) -> None:
    server, peer, protocol = guarded_pair(stall_s=5.0)
    with peer:
        started = trio.current_time()
        with trio.fail_after(60):
            await server.protocol_send(RawData(b"x" * (4 * 1024 * 1024)))
        assert trio.current_time() - started >= 5.0
        assert any(isinstance(e, Closed) for e in protocol.events)
        assert server.stream.socket.fileno() == -1  # closed


async def test_a_write_that_fits_goes_out_at_once() -> None:
    server, peer, protocol = guarded_pair()
    with peer:
        await server.protocol_send(RawData(b"hello"))
        assert peer.recv(16) == b"hello" and not protocol.events
        await server.stream.aclose()


async def test_closing_completes_even_when_the_caller_is_cancelled() -> None:
    server, peer, _ = guarded_pair()
    with peer:
        with trio.CancelScope() as cancelled:
            cancelled.cancel()
            await server._close()
        assert server.stream.socket.fileno() == -1
        assert peer.recv(16) == b""  # the client sees the connection end


async def test_hypercorns_own_close_still_needs_the_shield() -> None:
    """Why ``_close`` is overridden: under cancellation the stock one never closes the socket.
    If this fails, Hypercorn fixed it and the override in compat.hypercorn can go."""
    mine, peer = socket.socketpair()
    with peer:
        stock = TCPServer(None, Config(), None, {}, trio.SocketStream(trio.socket.from_stdlib_socket(mine)))  # type: ignore[arg-type]
        with trio.CancelScope() as cancelled:
            cancelled.cancel()
            await stock._close()
        assert stock.stream.socket.fileno() != -1
        await stock.stream.aclose()
