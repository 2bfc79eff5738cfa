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
* Attributes without an underscore that Hypercorn does not document either, used by the
  subclass: ``protocol_send`` (overridden), ``send_lock``, ``stream``, ``protocol``,
  ``config``, and ``idle_task``, replaced by the gateway's timer, which follows the interface
  of Hypercorn's ``TrioSingleTask`` (``restart(task_group, action)``, ``stop()``).

Public API used where a private name was used before: ``TaskGroup.spawn`` (the keep-alive
timer's tasks; it was ``task_group._nursery``), see :func:`spawn_if_open`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer
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
        data = event.data
        lock = self.send_lock
        if not lock.locked():
            # The common case: nobody else is writing and the socket buffer has room, so the
            # bytes go out in one non-blocking write, with no task switch and no timer.
            lock.acquire_nowait()
            try:
                sent = self._write_now(data)
                if sent < len(data):
                    await self._send_rest(memoryview(data)[sent:])
            finally:
                lock.release()
            return
        async with lock:
            await self._send_rest(data)

    def _write_now(self, data: bytes) -> int:
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

    async def _send_rest(self, data: Any) -> None:
        try:
            with trio.CancelScope(shield=True):
                await send_with_stall_limit(self.stream, data, self.stall_s)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.protocol.handle(Closed())
        except trio.TooSlowError:
            log.info("closing a connection whose client stopped reading", extra={"stall_s": self.stall_s})
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        hooks = self.hooks
        if hooks is None:
            await super()._read_data()
            return
        client, server = self._addresses()
        token = hooks.opened(client, server)
        try:
            await super()._read_data()
        finally:
            hooks.closed(client, server, token)
            # Reading is over (EOF, reset, closed, or cancelled): nothing more can arrive. The
            # keep-alive timer of an idle connection would otherwise hold it, and its
            # descriptor, until it fired after the client had already gone. ``stop`` never
            # waits, so it is safe here even while Cancelled propagates.
            await self.idle_task.stop()

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
