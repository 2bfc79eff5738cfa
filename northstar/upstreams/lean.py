"""The lean lane: ``tools/call`` to a Streamable HTTP upstream that answers JSON, in the caller's task.

The SDK's client session still owns the connection: the handshake, tool listings,
``notifications/tools/list_changed``, calls that relay progress, and ``notifications/cancelled``.
Through the SDK, each call also crosses its write stream, a task spawned per request, httpx2's
client layers, the transport's read stream, this package's pump and the session's receive
loop: about two thirds of the gateway's CPU per upstream call (``docs/performance.md``,
"Upstreams"). A call without a progress relay takes this lane instead: one HTTP/1.1 POST on a
kept-alive connection from a small pool (:class:`LeanPool`), carrying the session's own
headers (``Mcp-Session-Id``, ``MCP-Protocol-Version``, the upstream's headers with their
secrets), read back in the caller's task and cancel scope.

The lane asks for JSON only (``Accept: application/json``). A server that answers only SSE
refuses that with 406 before it runs anything (the SDK's servers check ``Accept`` first):
:class:`LeanRefused`, and the session takes the SDK path from then on. A server that answers
SSE anyway is read as SSE (the reply with the call's id; the lane then steps aside too).

Everything here is bounded: the answer's size (the upstream's ``max_result_bytes`` plus room
for the envelope), the idle connections kept (the upstream's ``max_concurrency``), and the
connect time (the caller's deadline). A connection is reused only when its last exchange ended
cleanly and it is not readable while idle (a server that closed it is noticed before reuse);
a cancelled or failed exchange closes its connection.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import orjson
import trio

from northstar.common import phases
from northstar.mcp_gateway.protocol import http1

READ_CHUNK = 65536
ENVELOPE_SLACK = 64 * 1024  # the JSON-RPC envelope around a result of max_result_bytes


class LeanRefused(Exception):
    """The server will not answer this lane (406/415 before running anything): use the SDK path."""


class LeanLost(Exception):
    """The connection failed before a whole answer arrived (the call may or may not have run)."""


class LeanTooLarge(Exception):
    """The answer was larger than the bound."""


@dataclass
class LeanAnswer:
    status: int
    content_type: str
    body: bytes


@dataclass
class _Conn:
    stream: trio.abc.Stream
    sock: Any  # the trio socket under the stream (idle readability check)
    buf: bytearray = field(default_factory=bytearray)  # received, not yet read
    done: bool = False  # the last exchange ended cleanly and the server keeps the connection

    def reusable(self) -> bool:
        return self.done and not self.buf

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await self.stream.aclose()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass


@dataclass
class LeanSession:
    """What the SDK's handshake established that a call needs: set at connect, read per call."""

    session_id: str | None = None
    protocol_version: str | None = None


class LeanPool:
    """Kept-alive HTTP/1.1 connections to one upstream URL; ``post`` sends one JSON-RPC message."""

    def __init__(self, url: str, headers: Mapping[str, str], session: LeanSession, *, max_idle: int,
                 max_body: int) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._tls else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rsplit("@", 1)[-1]
        self._headers = [("Host", authority), ("Content-Type", "application/json"), ("Accept", "application/json"),
                         *((k, v) for k, v in headers.items())]
        # The request's fixed part, written once (ValueError: a header that cannot be sent).
        self._fixed = b"POST %s HTTP/1.1\r\n%s" % (self._target.encode("ascii"), http1.header_lines(self._headers))
        self._session = session
        self._idle: list[_Conn] = []
        self._max_idle = max_idle
        self._max_body = max_body + ENVELOPE_SLACK
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def request_headers(self, body_len: int, extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
        out = [*self._headers, *extra, ("Content-Length", str(body_len))]
        if self._session.session_id is not None:
            out.append(("Mcp-Session-Id", self._session.session_id))
        if self._session.protocol_version is not None:
            out.append(("MCP-Protocol-Version", self._session.protocol_version))
        return out

    async def _connect(self) -> _Conn:
        stream: trio.abc.Stream
        tcp = await trio.open_tcp_stream(self._host, self._port)
        if self._tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            stream = trio.SSLStream(tcp, self._ssl, server_hostname=self._host, https_compatible=True)
        else:
            stream = tcp
        return _Conn(stream, tcp.socket)

    async def _checkout(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.sock.is_readable():  # readable while idle: closed by the server, or junk
                return conn
            await conn.aclose()
        return await self._connect()

    def _checkin(self, conn: _Conn) -> bool:
        if self._closed or not conn.reusable() or len(self._idle) >= self._max_idle:
            return False
        conn.done = False
        self._idle.append(conn)
        return True

    async def post(self, body: bytes, extra_headers: tuple[tuple[str, str], ...] = ()) -> LeanAnswer:
        """POST ``body``; the whole answer. ``LeanLost``/``LeanTooLarge`` on failure; a cancelled
        exchange closes its connection (the caller says ``notifications/cancelled``)."""
        conn = await self._checkout()
        keep = False
        try:
            answer = await self._exchange(conn, body, extra_headers)
            phases.mark("answered")
            keep = self._checkin(conn)
            return answer
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
            raise LeanLost(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        finally:
            if not keep:
                await conn.aclose()

    def _request(self, body: bytes, extra_headers: tuple[tuple[str, str], ...]) -> bytes:
        session = self._session
        dynamic = [*extra_headers, ("Content-Length", str(len(body)))]
        if session.session_id is not None:
            dynamic.append(("Mcp-Session-Id", session.session_id))
        if session.protocol_version is not None:
            dynamic.append(("MCP-Protocol-Version", session.protocol_version))
        try:
            lines = http1.header_lines(dynamic)
        except ValueError as exc:  # e.g. a session id the upstream chose that cannot be sent back
            raise LeanLost(str(exc)) from None
        return b"%s%s\r\n%s" % (self._fixed, lines, body)

    async def _receive(self, conn: _Conn) -> None:
        data = await conn.stream.receive_some(READ_CHUNK)
        if not data:
            raise LeanLost("the upstream closed the connection before answering")
        conn.buf += data

    async def _exchange(self, conn: _Conn, body: bytes, extra_headers: tuple[tuple[str, str], ...] = ()) -> LeanAnswer:
        """One request, one answer. A response framed by one Content-Length (what JSON answers
        are) is read here; any other framing is h11's to read (:meth:`_exchange_h11`)."""
        await conn.stream.send_all(self._request(body, extra_headers))
        phases.mark("sent")
        while True:
            head = http1.read_response_head(conn.buf)
            if isinstance(head, http1.ResponseHead):
                break
            if head is http1.DECLINE:
                return await self._exchange_h11(conn, body, extra_headers)
            if len(conn.buf) > http1.MAX_HEAD_BYTES:
                raise LeanLost("the upstream's answer head is too large")
            await self._receive(conn)
        if head.content_length > self._max_body:
            raise LeanTooLarge(f"more than {self._max_body} bytes")
        end = head.end + head.content_length
        while len(conn.buf) < end:
            await self._receive(conn)
        answer = LeanAnswer(head.status, head.content_type, bytes(conn.buf[head.end:end]))
        del conn.buf[:end]
        conn.done = not head.close  # bytes past the answer (conn.buf) also make it unusable
        return answer

    async def _exchange_h11(self, conn: _Conn, body: bytes, extra_headers: tuple[tuple[str, str], ...]) -> LeanAnswer:
        """The answer read by h11 from what arrived so far on; the connection is closed after it."""
        h = h11.Connection(our_role=h11.CLIENT)
        h.send(h11.Request(method="POST", target=self._target, headers=self.request_headers(len(body), extra_headers)))
        h.send(h11.Data(data=body))
        h.send(h11.EndOfMessage())  # the same bytes as were sent: h11 now expects the answer
        h.receive_data(bytes(conn.buf))
        conn.buf.clear()
        status, ctype, chunks, size = 0, "", [], 0
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                data = await conn.stream.receive_some(READ_CHUNK)
                if not data and h.their_state is not h11.DONE:
                    raise LeanLost("the upstream closed the connection before answering")
                h.receive_data(bytes(data))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                ctype = next((v.decode("latin-1") for k, v in event.headers if k == b"content-type"), "")
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > self._max_body:
                    raise LeanTooLarge(f"more than {self._max_body} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return LeanAnswer(status, ctype, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise LeanLost("the upstream closed the connection before answering")

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


def proxied(url: str) -> bool:
    """Whether the environment sends ``url`` through a proxy (``HTTP(S)_PROXY``, ``NO_PROXY``), as
    the SDK's HTTP client would: the lane connects directly, so it stays out of the way then."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def call_body(request_id: str, tool: str, arguments: Mapping[str, Any],
              meta: Mapping[str, str] | None = None) -> bytes:
    """The ``tools/call`` request; ``meta``: the calling span's trace context, as the SDK sends it."""
    params: dict[str, Any] = {"name": tool, "arguments": dict(arguments)}
    if meta:
        params["_meta"] = dict(meta)
    message = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    try:
        return orjson.dumps(message)
    except TypeError:  # what orjson refuses and JSON allows (integers past 64 bits)
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def reply_of(answer: LeanAnswer, request_id: str) -> dict[str, Any] | None:
    """The JSON-RPC reply with ``request_id`` in a JSON or SSE answer (None: not there)."""
    if answer.content_type.startswith("text/event-stream"):
        messages = _sse_messages(answer.body.decode("utf-8", "replace"))
    else:
        messages = [orjson.loads(answer.body)]
    for message in messages:
        if isinstance(message, dict) and message.get("id") == request_id and ("result" in message
                                                                               or "error" in message):
            return message
    return None


def _sse_messages(text: str) -> list[Any]:
    out: list[Any] = []
    data: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            try:
                out.append(json.loads("\n".join(data)))
            except ValueError:
                pass
            data = []
    return out
