"""The express lane: MCP's ``POST`` requests read and answered without the HTTP server's
generic per-request machinery.

Hypercorn spends most of a small request's time on machinery the gateway does not need for
its hottest requests: an h11 state machine fed event by event, a stream object, a memory
channel and a task per request, a lock and a task switch per written event. For a one-message
JSON-RPC ``POST`` that is far more than the gateway's own work. So on a plain HTTP/1.1
connection the gateway reads the bytes itself (:class:`ExpressLane`, plugged into each
connection by ``compat.hypercorn``):

* a request head that :func:`~northstar.mcp_gateway.protocol.http1.read_head` takes (``POST``
  to ``/mcp``, ``/mcp/`` or ``/mcp/stateless``, one unambiguous framing) becomes the same
  ASGI scope Hypercorn would have built, and the same application (the front door) is called
  with it, in a task of the connection's task group: every check, error answer, door and
  fallback to the SDK is the front door's, unchanged;
* the response is framed here (``Content-Length`` for a body sent in one message, chunks for a
  streamed one, e.g. an SSE answer) and written in one guarded write;
* the first request it does not take (a ``GET``, an ``OPTIONS``, anything unusual, a head it
  cannot read) is handed, with every byte after it, to Hypercorn's own protocol, which owns
  the connection from then on. Nothing is parsed twice or skipped.

What the connection keeps, as with Hypercorn: reading goes on while a request runs, so a
client's EOF or reset ends reading at once (the 2026-07-28 calls on it are cancelled, and the
application receives ``http.disconnect``); requests on a connection are answered in order, one
at a time (pipelined bytes wait, at most :data:`MAX_BUFFERED` of them, then reading pauses);
the keep-alive timer runs while the connection waits for a request (a client that trickles a
head is closed when it runs out); ``Connection: close`` from either side, and the server's
``keep_alive_max_requests``, close the connection after the response; an application failure
answers 500 (or closes a response already started) and is logged, and never reaches the server.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from typing import Any, Final

import trio
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from northstar.common import phases
from northstar.compat.hypercorn import ConnectionLink
from northstar.mcp_gateway.protocol import http1
from northstar.mcp_gateway.transports.http.asgi import ASGIApp

log = logging.getLogger("northstar.http")

#: The paths whose POSTs the lane reads (the Streamable HTTP endpoints).
EXPRESS_PATHS: Final = frozenset({b"/mcp", b"/mcp/", b"/mcp/stateless"})
#: Bytes received and not yet read (a body's unread part, pipelined requests) before reading pauses.
MAX_BUFFERED: Final = 256 * 1024
_ASGI = {"spec_version": "2.1", "version": "3.0"}


class ExpressLane:
    """The reader of one server's plain HTTP/1.1 connections (``ConnectionHooks.express``)."""

    def __init__(self, app: ASGIApp, paths: frozenset[bytes] = EXPRESS_PATHS) -> None:
        self.app = app
        self.paths = paths
        self.taken = 0  # requests answered by the lane (diagnostics, tests)
        self.handed_over = 0  # connections given to Hypercorn
        self._date_second = -1
        self._date: list[tuple[bytes, bytes]] = []
        self._link_headers: Any = None

    async def __call__(self, link: ConnectionLink) -> None:
        await _Connection(self, link).run()

    def response_headers(self, link: ConnectionLink) -> list[tuple[bytes, bytes]]:
        """The server's own response headers (``date``), formatted once a second."""
        second = int(time.time())
        if second != self._date_second:
            self._date_second, self._date = second, link.response_headers()
        return self._date


class ExpressMetrics(Collector):
    """The lane's counters, read when scraped: requests it answered, connections it handed over."""

    def __init__(self, lane: ExpressLane) -> None:
        self.lane = lane

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily("northstar_http_express_requests", "MCP POSTs read and framed by the express "
                                  "lane (the rest of the HTTP traffic goes through Hypercorn).", value=self.lane.taken)
        yield CounterMetricFamily("northstar_http_express_handovers", "Connections the express lane handed to "
                                  "Hypercorn at their first request it does not take.", value=self.lane.handed_over)


class _Connection:
    __slots__ = ("buf", "busy", "closing", "eof", "handed_over", "lane", "link", "request", "room", "served")

    def __init__(self, lane: ExpressLane, link: ConnectionLink) -> None:
        self.lane = lane
        self.link = link
        self.buf = bytearray()
        self.busy = False  # a request of this connection is being answered
        self.handed_over = False
        self.closing = False
        self.eof = False
        self.request: _Request | None = None
        self.served = 0
        self.room = trio.Event()

    async def run(self) -> None:
        link = self.link
        while True:
            data = await link.receive()
            if self.handed_over:
                await link.feed(data)
                if not data:
                    return
                continue
            if not data:
                self.eof = True
                if self.request is not None:
                    self.request.wake()
                return
            self.take(data)
            if not self.busy:
                await self.pump()
            while self.buffered() > MAX_BUFFERED and not (self.handed_over or self.closing):
                self.room = trio.Event()
                await self.room.wait()

    def buffered(self) -> int:
        request = self.request
        return len(self.buf) + (request.unread if request is not None else 0)

    def take(self, data: bytes) -> None:
        request = self.request
        if request is not None and request.remaining:
            n = min(request.remaining, len(data))
            request.body_in(data[:n])
            data = data[n:]
        if data:
            self.buf += data

    async def pump(self) -> None:
        """Start the next request in the buffer, or hand the connection to Hypercorn."""
        if self.busy or self.handed_over or self.closing or not self.buf:
            return
        head = http1.read_head(self.buf, self.lane.paths)
        if head is http1.NEED_MORE:
            return
        if not isinstance(head, http1.Head):
            await self.hand_over()
            return
        end = head.end + head.content_length
        body = bytes(self.buf[head.end:end])
        del self.buf[:end]
        request = _Request(self, head, body)
        self.request, self.busy = request, True
        await self.link.busy()
        if not self.link.spawn(self.serve, request):
            self.closing = True

    async def hand_over(self) -> None:
        self.handed_over = True
        self.lane.handed_over += 1
        data, self.buf = bytes(self.buf), bytearray()
        self.room.set()
        await self.link.feed(data)

    async def serve(self, request: _Request) -> None:
        link = self.link
        try:
            await self.lane.app(request.scope(), request.receive, request.send)
        except Exception:
            log.exception("error in the ASGI application (express lane)")
            request.failed = True
        finally:
            request.finished()
        self.lane.taken += 1
        self.served += 1
        if not request.complete:
            if not request.head_sent and not self.eof:  # as Hypercorn answers: empty, then close
                await link.write(http1.response_head(500, [], self.lane.response_headers(link), 0, True))
            request.must_close = True
        if request.must_close or request.remaining or self.eof or link.terminating():
            self.closing = True
            self.room.set()
            await link.close()
            return
        self.request, self.busy = None, False
        self.room.set()
        await self.pump()
        if not self.busy and not self.handed_over and not self.closing:
            await link.idle()


class _Request:
    """One request on the lane: its ASGI receive (body, then disconnect) and send (framing)."""

    __slots__ = ("arrived", "body", "chunked", "chunks", "complete", "conn", "done", "failed", "head",
                 "head_sent", "headers", "must_close", "received_at", "remaining", "status", "unread")

    def __init__(self, conn: _Connection, head: http1.Head, body: bytes) -> None:
        self.conn = conn
        self.head = head
        self.received_at = time.perf_counter()  # its head (and the body so far) read: the call's phases start
        self.chunks: collections.deque[bytes] = collections.deque([body] if body else [])
        self.unread = len(body)
        self.remaining = head.content_length - len(body)  # still to come from the client
        self.body = True  # the body's last part has not been received by the application yet
        self.arrived = trio.Event()
        self.done = False  # the application returned
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_sent = False
        self.chunked = False
        self.complete = False
        self.failed = False
        self.must_close = head.close or conn.served + 1 >= conn.link.max_requests

    def scope(self) -> dict[str, Any]:
        conn = self.conn
        path = self.head.path
        return {
            "type": "http", "asgi": _ASGI, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode("ascii"), "query_string": b"", "root_path": "",
            "headers": self.head.headers, "client": conn.link.client, "server": conn.link.server,
            "state": dict(conn.link.lifespan_state), "extensions": {}, phases.RECEIVED_AT_KEY: self.received_at,
        }

    # -- the body, as the application reads it ------------------------------------------
    def body_in(self, data: bytes) -> None:
        self.chunks.append(data)
        self.unread += len(data)
        self.remaining -= len(data)
        self.wake()

    def wake(self) -> None:
        self.arrived.set()

    def finished(self) -> None:
        self.done = True
        self.wake()

    async def receive(self) -> dict[str, Any]:
        while self.body:
            if self.chunks or not self.remaining:
                data = b"".join(self.chunks)
                self.chunks.clear()
                self.unread = 0
                self.conn.room.set()
                self.body = bool(self.remaining)
                return {"type": "http.request", "body": data, "more_body": self.body}
            if self.conn.eof or self.done:
                break
            self.arrived = trio.Event()
            await self.arrived.wait()
        while not (self.complete or self.conn.eof or self.conn.closing or self.done):
            self.arrived = trio.Event()
            await self.arrived.wait()
        return {"type": "http.disconnect"}

    # -- the response, as the application sends it -------------------------------------
    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            self.headers = list(message.get("headers") or ())
            for name, value in self.headers:
                if name.lower() == b"connection" and b"close" in bytes(value).lower():
                    self.must_close = True
            return
        if kind != "http.response.body":
            return  # extensions the lane does not offer (trailers, push, early hints)
        if not self.status:
            raise RuntimeError("http.response.body sent before http.response.start")
        if self.complete:
            return
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        link = self.conn.link
        if not self.head_sent:
            chunked = more and not http1.bodiless(self.status)
            extra = self.conn.lane.response_headers(link)
            head = http1.response_head(self.status, self.headers, extra, None if more else len(body),
                                       self.must_close)  # ValueError: unwritable header; 500 instead
            self.head_sent, self.chunked = True, chunked
            if http1.bodiless(self.status):
                data = head
            elif self.chunked:
                data = head + http1.chunk(body)
            else:
                data = head + body
        else:
            data = http1.chunk(body) if self.chunked else b""
        if not more:
            self.complete = True
            if self.chunked:
                data += http1.LAST_CHUNK
            self.wake()
        if data and not await link.write(data):
            self.must_close = True
