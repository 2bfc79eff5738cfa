"""Hypercorn's trio worker with the per-connection behaviour the gateway depends on.

``hypercorn.trio.serve`` runs one ``TCPServer`` per accepted connection. The gateway needs
four things from that object that Hypercorn does not offer (:class:`GuardedTCPServer`):

* Writes that make no progress for ``write_stall_s`` close the connection. Hypercorn shields
  every socket write from cancellation, so a client that stopped reading (a never-reading
  SSE client) parks the response task for ever: no send timeout can fire, the connection
  and its session are never released, and graceful shutdown hangs. A write that fits the
  socket buffer stays one non-blocking write: no task switch, no timer.
* The connection tells the gateway when it opens and when reading from it ends (the client's
  EOF or reset) while its requests may still run, so closing a connection cancels the
  2026-07-28 calls it carried without a watcher task per call (:class:`ConnectionHooks`).
* The keep-alive timer is the gateway's (one reaper task for the whole server instead of one
  timer task per idle period), and it is stopped as soon as reading ends.
* Closing is shielded: ``_close`` runs ``send_eof`` before ``aclose``; when the caller is
  being cancelled (Quart-Trio cancels its request task right after the response) the first
  raised ``Cancelled`` and the socket was never closed, so a ``Connection: close`` response
  kept its descriptor until the client gave up.
* A plain HTTP/1.1 connection can be read by the gateway's own reader, the express lane
  (``ConnectionHooks.express``; ``transports/http/express.py``): it answers the MCP ``POST``
  requests itself and hands the connection to Hypercorn's protocol at the first request it
  does not take. :class:`ConnectionLink` is everything that reader may touch.

Verified against Hypercorn 0.18.0 (:data:`VERIFIED`; ``pyproject.toml`` pins ``>=0.18,<0.19``).
Hypercorn internals used, and why no public way exists:

* ``hypercorn.trio.run.TCPServer``, a module global, is replaced once by :func:`install` with
  a factory. ``serve`` takes no connection factory, and neither ``Config`` nor the listeners
  (made inside ``worker_serve`` from ``config.create_sockets()``) let anything wrap the
  accepted streams. The factory builds the stock ``TCPServer`` for every config that is not a
  :class:`GatewayConfig`, so any other Hypercorn server in the process is untouched.
* ``TCPServer._read_data`` (overridden, calls the original): the only place where the end of
  reading is known while requests still run. ASGI's ``http.disconnect`` reaches only a request
  that is listening for it, which costs a task per call.
* ``TCPServer._close`` (overridden, calls the original inside a shield): see above.
* ``TCPServer._idle_timeout`` (overridden) and ``TCPServer._initiate_server_close`` (called):
  Hypercorn's timer waits the keep-alive time itself inside ``_idle_timeout``; with the
  gateway's reaper that wait is already over when it runs, so the override closes at once.
* ``TCPServer._task_group`` (the connection's task group, where the express lane runs its
  requests so the connection ends only after them, as Hypercorn's own do) and
  ``TCPServer._idle_timeout`` as the keep-alive timer's action while the express lane waits
  for a request; ``TCPServer._close`` to close a connection the lane is done with. Hypercorn
  has no public way to read a connection with another parser: ``_read_data`` is the seam.
  ``hypercorn.protocol.h11.H11Protocol`` (public module) tells a plain HTTP/1.1 connection;
  ``hypercorn.trio.tcp_server.MAX_RECV`` is the read size Hypercorn uses; ``TCPServer.state``
  is the lifespan state every request's scope carries; ``Config.response_headers`` gives the
  headers Hypercorn adds (``date``); ``TCPServer.context.terminated`` says the server is
  shutting down (no new request on the connection).
* Attributes without an underscore that Hypercorn does not document either, used by the
  subclass: ``protocol_send`` (overridden), ``send_lock``, ``stream``, ``protocol``,
  ``config``, and ``idle_task``, replaced by the gateway's timer, which follows the interface
  of Hypercorn's ``TrioSingleTask`` (``restart(task_group, action)``, ``stop()``).

Public API used where a private name was used before: ``TaskGroup.spawn`` (the keep-alive
timer's tasks; it was ``task_group._nursery``), see :func:`spawn_if_open`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.utils import parse_socket_addr

from northstar.compat.versions import IncompatibleLibrary, mismatches

log = logging.getLogger("northstar.server")

#: The Hypercorn release this module was verified against (``tests/compat/test_hypercorn.py``).
VERIFIED = {"hypercorn": "0.18.0"}


def unverified() -> list[str]:
    """Why the installed Hypercorn is not the verified one (empty when it is)."""
    return mismatches(VERIFIED, __name__)


class KeepAliveTimer(Protocol):
    """A connection's keep-alive timer, as Hypercorn drives it (its ``TrioSingleTask``).

    ``restart`` when the connection goes idle (``action`` closes it: run it once the
    keep-alive time is over), ``stop`` when a request starts or reading ends.
    """

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None: ...

    async def stop(self) -> None: ...


class ConnectionHooks(Protocol):
    """What the gateway plugs into every connection of a :class:`GatewayConfig` server."""

    def keep_alive_timer(self) -> KeepAliveTimer:
        """A new connection's keep-alive timer."""
        ...

    def opened(self, client: Any, server: Any) -> Any:
        """A connection opened, (client, server) as in the ASGI scope; returns a token for ``closed``."""
        ...

    def closed(self, client: Any, server: Any, token: Any) -> None:
        """Reading from the connection ended: nothing more can arrive from the client. Never waits."""
        ...

    def express(self) -> Callable[[ConnectionLink], Awaitable[None]] | None:
        """The reader of a plain HTTP/1.1 connection (see :class:`ConnectionLink`), or None
        to leave every request to Hypercorn."""
        ...


class GatewayConfig(Config):
    """Hypercorn's ``Config`` plus the gateway's per-connection settings; serving one with
    :func:`serve` gives each connection a :class:`GuardedTCPServer`."""

    #: A response write that makes no progress for this long closes the connection.
    write_stall_s: float = 10.0
    #: Keep-alive timers and open/close notices; None keeps Hypercorn's own timer.
    connection_hooks: ConnectionHooks | None = None


def spawn_if_open(task_group: Any, func: Callable[..., Awaitable[Any]], *args: Any) -> bool:
    """Start ``func(*args)`` in a connection's task group; False when the connection is gone.

    Hypercorn's ``TaskGroup`` drops its nursery (``None``) once the connection ended, and a
    closing nursery refuses new tasks (``RuntimeError``): either way there is nothing left to
    run the task for.
    """
    spawn = task_group.spawn  # a TaskGroup without spawn is an incompatible Hypercorn: let it raise
    try:
        spawn(func, *args)
    except (AttributeError, RuntimeError):
        return False
    return True


async def send_with_stall_limit(stream: Any, data: Any, stall_s: float) -> None:
    """Write ``data``; raise ``trio.TooSlowError`` when no byte could be written for ``stall_s``.

    A slow client that keeps reading is fine; one that stopped reading (its window is shut)
    is not, whatever the response (an SSE stream, a large body).
    """
    sock = getattr(stream, "socket", None)
    if sock is None:  # not a plain socket stream (e.g. TLS): bound the whole write instead
        with trio.fail_after(stall_s):
            await stream.send_all(data)
        return
    with memoryview(data) as view:
        sent = 0
        while sent < len(view):
            with trio.fail_after(stall_s):
                sent += await sock.send(view[sent:])


class GuardedTCPServer(TCPServer):
    """Hypercorn's per-connection server with the gateway's writes, timers, hooks and close."""

    def __init__(self, app: Any, config: GatewayConfig, context: Any, state: Any, stream: Any) -> None:
        super().__init__(app, config, context, state, stream)
        self.stall_s = float(config.write_stall_s)
        self.hooks = config.connection_hooks
        if self.hooks is not None:
            self.idle_task = self.hooks.keep_alive_timer()  # type: ignore[assignment]

    async def _idle_timeout(self) -> None:
        if self.hooks is None:
            await super()._idle_timeout()
        else:  # the gateway's timer already waited out the keep-alive time (or the server is stopping)
            await self._initiate_server_close()

    async def protocol_send(self, event: Any) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        if not await self.write_raw(event.data):
            await self.protocol.handle(Closed())

    async def write_raw(self, data: bytes) -> bool:
        """Write ``data`` to the client; False when the connection is gone or its client stopped
        reading for ``write_stall_s`` (then the stream is closed)."""
        lock = self.send_lock
        if not lock.locked():
            # The common case: nobody else is writing and the socket buffer has room, so the
            # bytes go out in one non-blocking write, with no task switch and no timer.
            lock.acquire_nowait()
            try:
                sent = self.write_now(data)
                return sent == len(data) or await self._send_rest(memoryview(data)[sent:])
            finally:
                lock.release()
        async with lock:
            return await self._send_rest(data)

    def write_now(self, data: bytes) -> int:
        """Bytes written without blocking (0 when the buffer is full or the socket is not plain)."""
        sock = getattr(self.stream, "socket", None)
        if sock is None or not data:
            return 0
        try:
            return os.write(sock.fileno(), data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return 0  # the careful path below meets the same error and closes the connection

    async def _send_rest(self, data: Any) -> bool:
        try:
            with trio.CancelScope(shield=True):
                await send_with_stall_limit(self.stream, data, self.stall_s)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        except trio.TooSlowError:
            log.info("closing a connection whose client stopped reading", extra={"stall_s": self.stall_s})
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            return False

    async def _read_data(self) -> None:
        hooks = self.hooks
        if hooks is None:
            await super()._read_data()
            return
        client, server = self._addresses()
        token = hooks.opened(client, server)
        try:
            express = hooks.express() if self._express_eligible() else None
            if express is None:
                await super()._read_data()
            else:
                link = ConnectionLink(self, client, server)
                try:
                    await express(link)
                except Exception:  # one connection's reader must never take the server down
                    log.exception("the express lane failed on a connection; closing it")
                await self.protocol.handle(Closed())
        finally:
            hooks.closed(client, server, token)
            # Reading is over (EOF, reset, closed, or cancelled): nothing more can arrive. The
            # keep-alive timer of an idle connection would otherwise hold it, and its
            # descriptor, until it fired after the client had already gone. ``stop`` never
            # waits, so it is safe here even while Cancelled propagates.
            await self.idle_task.stop()

    def _express_eligible(self) -> bool:
        """A plain-socket HTTP/1.1 connection whose requests Hypercorn would hand the app as is."""
        config = self.config
        return (getattr(self.stream, "socket", None) is not None
                and isinstance(getattr(self.protocol, "protocol", None), H11Protocol)
                and not config.server_names and config.accesslog is None and not config.root_path)

    def _addresses(self) -> tuple[Any, Any]:
        """(client, server) as Hypercorn puts them in the ASGI scope; (None, None) if unknown."""
        sock = getattr(self.stream, "socket", None)
        if sock is None:
            return None, None
        try:
            return (parse_socket_addr(sock.family, sock.getpeername()),
                    parse_socket_addr(sock.family, sock.getsockname()))
        except OSError:
            return None, None

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            await super()._close()


class ConnectionLink:
    """What the express lane may do with one connection: the public face of a
    :class:`GuardedTCPServer` for a reader that parses HTTP/1.1 itself.

    The reader receives the bytes; requests it answers itself are written with :meth:`write`;
    from the first one it does not take, it hands the bytes, in order, to Hypercorn's own
    protocol with :meth:`feed` (and keeps feeding: the connection is Hypercorn's from there).
    The keep-alive timer is the connection's (:meth:`busy`, :meth:`idle`); tasks for its
    requests run in the connection's task group (:meth:`spawn`), so the connection ends only
    after them, as with Hypercorn's own requests.
    """

    __slots__ = ("_feed_lock", "_server", "client", "lifespan_state", "max_requests", "server")

    def __init__(self, server: GuardedTCPServer, client: Any, address: Any) -> None:
        self._server = server
        self._feed_lock = trio.Lock()  # FIFO: bytes reach Hypercorn's parser in arrival order
        self.client = client
        self.server = address
        self.lifespan_state: dict[str, Any] = server.state
        self.max_requests = int(server.config.keep_alive_max_requests)

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers Hypercorn adds to every response (``date``, ``server`` as configured)."""
        return self._server.config.response_headers("h11")

    async def receive(self) -> bytes:
        """The next bytes from the client; ``b""`` once reading is over (EOF, reset, closed)."""
        server = self._server
        try:
            with trio.fail_after(server.config.read_timeout or math.inf):
                return bytes(await server.stream.receive_some(MAX_RECV))
        except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
            return b""

    async def write(self, data: bytes) -> bool:
        """Write ``data`` (the same guarded write as Hypercorn's responses); False when the
        connection is gone or its client stopped reading (then it is closed)."""
        return await self._server.write_raw(data)

    async def feed(self, data: bytes) -> None:
        """Hand bytes to Hypercorn's HTTP/1.1 protocol, in order (``b""``: the client's EOF)."""
        async with self._feed_lock:
            await self._server.protocol.handle(RawData(data))

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``func(*args)`` in the connection's task group; False when the connection is gone."""
        return spawn_if_open(self._server._task_group, func, *args)

    def terminating(self) -> bool:
        """The server is shutting down: close the connection after the current response."""
        return bool(self._server.context.terminated.is_set())

    async def busy(self) -> None:
        """A request started: the keep-alive timer stops."""
        await self._server.idle_task.stop()

    async def idle(self) -> None:
        """The connection waits for a request: the keep-alive timer runs."""
        server = self._server
        await server.idle_task.restart(server._task_group, server._idle_timeout)

    async def close(self) -> None:
        """Close the connection (shielded); the reader then receives ``b""``."""
        await self._server._close()


def connection_server(app: Any, config: Config, context: Any, state: Any, stream: Any) -> TCPServer:
    """What Hypercorn's trio worker calls, once :func:`install` ran, for each accepted connection."""
    if isinstance(config, GatewayConfig):
        return GuardedTCPServer(app, config, context, state, stream)
    return TCPServer(app, config, context, state, stream)


def install() -> None:
    """Make Hypercorn's trio worker build its connections with :func:`connection_server` (idempotent)."""
    current = getattr(hypercorn_run, "TCPServer", None)
    if current is connection_server:
        return
    if current is not TCPServer:
        raise IncompatibleLibrary(
            f"hypercorn.trio.run no longer builds its connections with hypercorn.trio.tcp_server.TCPServer "
            f"(found {current!r})", __name__, VERIFIED)
    hypercorn_run.TCPServer = connection_server  # type: ignore[attr-defined,assignment]


async def serve(
    app: Any,
    config: GatewayConfig,
    *,
    shutdown_trigger: Callable[..., Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve`` with :class:`GuardedTCPServer` connections; reports the bound addresses."""
    install()
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
