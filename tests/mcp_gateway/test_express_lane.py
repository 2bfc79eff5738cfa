"""The express lane answers exactly as Hypercorn would, and hands over what it does not take.

Differential: the same bytes, on a real port, to one server with the lane and one without it
(Hypercorn's own HTTP/1.1 protocol), in front of the same recording ASGI application. The
responses (status, headers but the framing ones, body), whether the connection stays open, and
what the application saw must be the same; the lane's counters show which requests it took.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.lowlevel

from northstar.compat import hypercorn as compat
from northstar.mcp_gateway.transports.http.connection import GatewayConnections, IdleReaper
from northstar.mcp_gateway.transports.http.express import MAX_BUFFERED, ExpressLane

WAIT_S = 10.0
FRAMING = {"content-length", "transfer-encoding", "connection", "date"}


class App:
    """Records each request; answers as its ``x-mode`` header says."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, list[tuple[bytes, bytes]], bytes]] = []
        self.disconnected = trio.Event()
        self.holding = trio.Event()
        self.release = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        mode = dict(scope["headers"]).get(b"x-mode", b"json").decode()
        body = b""
        if mode != "early":
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                body += message["body"]
                if not message.get("more_body"):
                    break
        self.seen.append((scope["method"], scope["path"], list(scope["headers"]), body))
        answer = json.dumps({"n": len(body), "sha": hashlib.sha256(body).hexdigest()[:16]}).encode()
        start = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-type", b"application/json"), (b"x-req", str(len(self.seen)).encode())]}
        if mode == "fail":
            raise RuntimeError("the application failed before answering")
        if mode == "silent":
            return
        if mode == "hold":
            self.holding.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
            return
        if mode == "bad-header":
            start["headers"] = [(b"x-a", b"b\r\nset-cookie: owned=1")]
        if mode == "close":
            start["headers"] = [*start["headers"], (b"connection", b"close")]
        if mode == "early":
            start["status"] = 413
        await send(start)
        if mode in ("stream", "fail-late"):
            for part in (b"event: message\r\n", b"", b"data: " + answer + b"\r\n\r\n"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            if mode == "fail-late":
                raise RuntimeError("the application failed while streaming")
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": answer})


@dataclass
class Server:
    port: int
    app: App
    lane: ExpressLane | None


@asynccontextmanager
async def serving(express: bool, *, max_requests: int = 1000) -> AsyncIterator[Server]:
    app = App()
    lane = ExpressLane(app) if express else None
    reaper = IdleReaper(30.0)
    config = compat.GatewayConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.include_server_header = False
    config.keep_alive_max_requests = max_requests
    config.connection_hooks = GatewayConnections(reaper, lane)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper.run, shutdown)
        binds = await nursery.start(lambda task_status: compat.serve(app, config, shutdown_trigger=shutdown.wait,
                                                                     task_status=task_status))
        try:
            yield Server(int(binds[0].rsplit(":", 1)[1]), app, lane)
        finally:
            app.release.set()
            shutdown.set()


@dataclass
class Reader:
    stream: trio.SocketStream
    buf: bytearray = field(default_factory=bytearray)
    eof: bool = False

    async def more(self) -> bool:
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        self.buf += data
        self.eof = not data
        return bool(data)

    async def line(self) -> bytes | None:
        while (i := self.buf.find(b"\r\n")) < 0:
            if not await self.more():
                return None
        out = bytes(self.buf[:i])
        del self.buf[:i + 2]
        return out

    async def exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not await self.more():
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def response(self) -> tuple[Any, ...] | None:
        """(status, headers without framing, body) or ("truncated", ...) or None at EOF."""
        status_line = await self.line()
        if status_line is None:
            return None
        while status_line.startswith(b"HTTP/1.1 1"):  # 100 Continue: its own head, then the answer
            while await self.line():
                pass
            status_line = await self.line()
            if status_line is None:
                return None
        headers: dict[str, str] = {}
        while (line := await self.line()):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        kept = tuple(sorted((k, v) for k, v in headers.items() if k not in FRAMING))
        body = b""
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = await self.line()
                if size is None:
                    return ("truncated", status, kept, body)
                n = int(size, 16)
                data = await self.exactly(n + 2)
                if data is None:
                    return ("truncated", status, kept, body)
                if n == 0:
                    break
                body += data[:-2]
        else:
            data = await self.exactly(int(headers.get("content-length", "0")))
            if data is None:
                return ("truncated", status, kept, body)
            body = data
        return (status, kept, body)


def post(mode: str = "json", body: bytes = b"{}", path: str = "/mcp", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Mode: {mode}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


PROBE = post("json", b'{"probe":1}')


@dataclass(frozen=True)
class Case:
    writes: tuple[bytes, ...]
    responses: int
    stays_open: bool
    taken: int  # requests the lane answers itself (the probe included)
    max_requests: int = 1000


CASES = {
    "one post": Case((post(),), 1, True, 2),
    "two pipelined posts": Case((post(body=b'{"a":1}') + post(body=b'{"b":2}', path="/mcp/stateless"),), 2, True, 3),
    "a body in three writes": Case((post(body=b'{"x":"' + b"y" * 5000 + b'"}')[:120],
                                    post(body=b'{"x":"' + b"y" * 5000 + b'"}')[120:3000],
                                    post(body=b'{"x":"' + b"y" * 5000 + b'"}')[3000:]), 1, True, 2),
    "a head in two writes": Case((post()[:20], post()[20:]), 1, True, 2),
    "a body larger than the buffer": Case((post(body=b"z" * (3 * MAX_BUFFERED)),), 1, True, 2),
    "post then get, pipelined": Case((post() + b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n",), 2, True, 1),
    "get first": Case((b"GET /mcp HTTP/1.1\r\nHost: gw\r\n\r\n" + post(),), 2, True, 0),
    "a chunked request body": Case((b"POST /mcp HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",), 1, True, 0),
    "CL and TE (smuggling)": Case((b"POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + post(),), 2, True, 0),
    "two Content-Lengths": Case((b"POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n"
                                 b"Content-Length: 3\r\n\r\n{}",), 1, False, 0),
    "no Host": Case((b"POST /mcp HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",), 1, False, 0),
    "Expect: 100-continue": Case((post(extra="Expect: 100-continue\r\n"),), 1, True, 0),
    "a query string": Case((post(path="/mcp?x=1"),), 1, True, 0),
    "another path": Case((post(path="/v1/tools"),), 1, True, 0),
    "HTTP/1.0": Case((post().replace(b"HTTP/1.1", b"HTTP/1.0"),), 1, False, 0),
    "a streamed answer": Case((post("stream"),), 1, True, 2),
    "the app fails": Case((post("fail"),), 1, False, 1),
    "the app fails while streaming": Case((post("fail-late"),), 1, False, 1),
    "the app never answers": Case((post("silent"),), 1, False, 1),
    "the app sends a splitting header": Case((post("bad-header"),), 1, False, 1),
    "the app says close": Case((post("close"),), 1, False, 1),
    "the client says close": Case((post(extra="Connection: close\r\n"),), 1, False, 1),
    "an answer before the body": Case((post("early").replace(b"Content-Length: 2", b"Content-Length: 900") + b"{}",),
                                      1, False, 1),
    "keep_alive_max_requests": Case((post() + post() + post(),), 3, False, 3, max_requests=3),
}


async def exchange(port: int, case: Case) -> tuple[list[Any], bool]:
    """Send the case's writes; read its responses; then probe: an answer, or the server's close."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        reader = Reader(stream)
        for data in case.writes:
            await stream.send_all(data)
            await trio.lowlevel.checkpoint()  # let each write be its own segment where it can
        responses = [await reader.response() for _ in range(case.responses)]
        try:
            await stream.send_all(PROBE)
        except trio.BrokenResourceError:
            return responses, False
        probe = await reader.response()
        return responses, probe is not None and probe[0] == 200


@pytest.mark.parametrize("name", list(CASES))
async def test_the_lane_answers_as_hypercorn_does(name: str) -> None:
    case = CASES[name]
    results = []
    with trio.fail_after(WAIT_S):
        for express in (False, True):
            async with serving(express, max_requests=case.max_requests) as server:
                responses, stays_open = await exchange(server.port, case)
                results.append((responses, stays_open, server.app.seen))
                if server.lane is not None:
                    assert server.lane.taken == case.taken
    (hyper, hyper_open, hyper_seen), (lane, lane_open, lane_seen) = results
    assert lane == hyper
    assert all(r is not None for r in lane), lane
    assert (lane_open, hyper_open) == (case.stays_open, case.stays_open)
    assert lane_seen == hyper_seen


async def test_a_client_that_goes_away_mid_request_is_heard_at_once() -> None:
    with trio.fail_after(WAIT_S):
        async with serving(True) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(post("hold"))
            await server.app.holding.wait()
            await stream.aclose()
            await server.app.disconnected.wait()  # the request hears http.disconnect
            assert server.lane is not None and server.lane.taken == 1


async def test_many_pipelined_requests_are_answered_in_order() -> None:
    bodies = [json.dumps({"i": i, "pad": "p" * (i * 97 % 3000)}).encode() for i in range(200)]
    with trio.fail_after(WAIT_S):
        async with serving(True) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                reader = Reader(stream)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream.send_all, b"".join(post(body=b) for b in bodies))
                    answers = [await reader.response() for _ in bodies]
            assert [a[2] if a else None for a in answers] == [
                json.dumps({"n": len(b), "sha": hashlib.sha256(b).hexdigest()[:16]}).encode() for b in bodies]
            assert [a[1][-1] if a else None for a in answers] == [("x-req", str(i + 1)) for i in range(200)]
            assert server.lane is not None and server.lane.taken == 200
