"""A small Redis client on trio: RESP2 over a pool of TCP connections, no threads.

The shared limits need a handful of commands (``EVALSHA`` / ``EVAL`` of two scripts, ``ZREM``,
``ZADD``, ``PEXPIRE``, ``TIME``, ``SCRIPT LOAD``) on the hot path of every governed call. Run
through a synchronous client in worker threads, each call paid a thread hand-off and waited for
the GIL behind the event loop; through ``redis.asyncio`` it paid a second event loop. Here a call
borrows a connection, writes its commands in one ``send_all``, reads the replies, and gives the
connection back: one round trip, in the caller's task.

* Connections are opened on demand, at most ``max_connections``; a caller beyond that waits
  for one (bounded by ``timeout_s``, like every exchange).
* An exchange that fails, times out or is cancelled closes its connection (its reply stream
  can no longer be trusted); the next caller opens a fresh one.
* ``redis://[user:password@]host[:port][/db]`` (``AUTH`` and ``SELECT`` on connect);
  ``rediss://`` for TLS.
* Errors: :class:`RedisError` for an error reply (``-ERR ...``), :class:`RedisUnavailable` when
  the server cannot be reached or answered nothing usable in time.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

MAX_REPLY_BYTES = 1 << 20  # the limits' replies are tiny; anything near this is a broken stream
Arg = str | bytes | int | float


class RedisError(Exception):
    """The server answered a command with an error reply."""


class RedisUnavailable(Exception):
    """The server could not be reached, or the exchange failed or timed out."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool


def parse_url(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {parts.scheme}://")
    path = parts.path.strip("/")
    return Endpoint(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=int(path or 0),
                    username=unquote(parts.username) if parts.username else None,
                    password=unquote(parts.password) if parts.password else None, tls=parts.scheme == "rediss")


def encode(command: Sequence[Arg]) -> bytes:
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Reader:
    """RESP2 replies from a stream, parsed as they arrive."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise RedisUnavailable("the server closed the connection")
        self.buf += chunk
        if len(self.buf) > MAX_REPLY_BYTES:
            raise RedisUnavailable("reply too large")

    async def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return line

    async def reply(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buf) < size + 2:
                await self._fill()
            data = bytes(self.buf[:size])
            del self.buf[:size + 2]
            return data
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [await self.reply() for _ in range(count)]
        raise RedisUnavailable(f"not a RESP reply: {line[:20]!r}")


class _Conn:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = _Reader(stream)

    async def exchange(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        await self.stream.send_all(b"".join(encode(c) for c in commands))
        return [await self.reader.reply() for _ in commands]

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)


class RedisClient:
    """A pool of connections to one server; :meth:`execute` and :meth:`pipeline` are the API."""

    def __init__(self, url: str, *, timeout_s: float = 0.5, max_connections: int = 16) -> None:
        self.endpoint = parse_url(url)
        self.timeout_s = timeout_s
        self._idle: list[_Conn] = []
        self._slots = trio.Semaphore(max_connections)
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def execute(self, *command: Arg) -> Any:
        """One command's reply (a :class:`RedisError` reply is raised)."""
        [reply] = await self.pipeline([command])
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Every command's reply, in order, in one round trip (error replies returned, not raised)."""
        with trio.move_on_after(self.timeout_s) as scope:
            async with self._slots:
                conn = await self._checkout()
                ok = False
                try:
                    replies = await conn.exchange(commands)
                    ok = True
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
                    raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from None
                finally:
                    if ok and not self._closed:
                        self._idle.append(conn)
                    else:
                        await conn.aclose()  # cancelled or failed mid-exchange: the stream is unusable
                return replies
        assert scope.cancelled_caught
        raise RedisUnavailable(f"no answer within {self.timeout_s} s")

    async def _checkout(self) -> _Conn:
        if self._idle:
            return self._idle.pop()
        try:
            tcp = await trio.open_tcp_stream(self.endpoint.host, self.endpoint.port)
        except OSError as exc:
            raise RedisUnavailable(f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {exc}") from None
        stream: trio.abc.Stream = tcp
        if self.endpoint.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            stream = trio.SSLStream(tcp, self._ssl, server_hostname=self.endpoint.host, https_compatible=True)
        conn = _Conn(stream)
        setup: list[list[Arg]] = []
        if self.endpoint.password is not None:
            setup.append(["AUTH", *([self.endpoint.username] if self.endpoint.username else []),
                          self.endpoint.password])
        if self.endpoint.db:
            setup.append(["SELECT", self.endpoint.db])
        if setup:
            try:
                replies = await conn.exchange(setup)
            except BaseException:
                await conn.aclose()
                raise
            if any(isinstance(r, RedisError) for r in replies):
                await conn.aclose()
                raise RedisUnavailable("the server refused AUTH or SELECT")
        return conn

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


class Script:
    """A Lua script run by its SHA (``EVALSHA``), loaded on first use or after a server restart."""

    def __init__(self, client: RedisClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        command: list[Arg] = ["EVALSHA", self.sha, len(keys), *keys, *args]
        [reply] = await self.client.pipeline([command])
        if isinstance(reply, RedisError) and str(reply).startswith("NOSCRIPT"):
            [reply] = await self.client.pipeline([["EVAL", self.source, len(keys), *keys, *args]])
        if isinstance(reply, RedisError):
            raise reply
        return reply
