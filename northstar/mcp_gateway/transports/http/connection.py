"""Per-connection behaviour of the HTTP server the gateway depends on, on top of Hypercorn.

Writes that make no progress close the connection (a client that stopped reading cannot hold
a stream, a session or shutdown); one reaper task keeps every idle connection's keep-alive
timer; a closed connection cancels the 2026-07-28 calls it carried. Hypercorn's private names
are used only through :mod:`northstar.compat.hypercorn`."""

from __future__ import annotations

import logging
import os
from typing import Any

import trio
from hypercorn.events import Closed, RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.utils import parse_socket_addr

from northstar.mcp_gateway.transports.http import fastpath

log = logging.getLogger("northstar.server")


async def send_with_stall_limit(stream: Any, data: bytes, stall_s: float) -> None:
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


class IdleReaper:
    """Closes idle keep-alive connections whose timer ran out: one task for the whole server.

    Hypercorn gives every idle connection its own timer task, started at the end of each
    response and cancelled at the next request: two task switches per request for a timer
    that almost never fires. Here a connection going idle is put in an ordered table with its
    deadline (the same ``keep_alive_timeout`` for all, so insertion order is deadline order)
    and taken out when its next request starts; one task sleeps until the earliest deadline
    and closes what expired. At shutdown every idle connection is closed at once, and any
    that goes idle afterwards is closed as it does, as Hypercorn's own timer does.
    """

    def __init__(self, keep_alive_s: float) -> None:
        self.keep_alive_s = keep_alive_s
        self.idle: dict[KeepAliveTimer, float] = {}
        self.closing = False
        self._work = trio.Event()

    def arm(self, timer: KeepAliveTimer) -> None:
        if self.closing:
            timer.fire()
            return
        self.idle.pop(timer, None)
        self.idle[timer] = trio.current_time() + self.keep_alive_s
        self._work.set()

    def disarm(self, timer: KeepAliveTimer) -> None:
        self.idle.pop(timer, None)

    async def run(self, shutdown: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire)
            await shutdown.wait()
            self.closing = True
            while self.idle:
                timer, _ = self.idle.popitem()
                timer.fire()
            nursery.cancel_scope.cancel()

    async def _expire(self) -> None:
        while True:
            if not self.idle:
                self._work = trio.Event()
                await self._work.wait()
                continue
            timer, deadline = next(iter(self.idle.items()))
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)  # re-armed timers moved back: look again
                continue
            del self.idle[timer]
            try:
                timer.fire()
            except Exception:  # one connection's timer must never take every connection down
                log.exception("keep-alive timer failed")


class KeepAliveTimer:
    """A connection's keep-alive timer, kept by the server's :class:`IdleReaper`.

    Hypercorn calls ``restart`` when the connection goes idle and ``stop`` when a request
    starts or reading ends; neither switches tasks. Without a reaper (a server run some other
    way) it falls back to one timer task per idle period, started with ``start_soon``.
    """

    __slots__ = ("_action", "_armed", "_reaper", "_scope", "_task_group")

    def __init__(self, reaper: IdleReaper | None) -> None:
        self._reaper = reaper
        self._task_group: Any = None
        self._action: Any = None
        self._scope: trio.CancelScope | None = None
        self._armed = 0  # bumped on every restart and stop: a firing for an older one is stale

    async def restart(self, task_group: Any, action: Any) -> None:
        self._armed += 1
        self._task_group, self._action = task_group, action
        if self._reaper is not None:
            self._reaper.arm(self)
            return
        if self._scope is not None:
            self._scope.cancel()
        scope = self._scope = trio.CancelScope()
        task_group._nursery.start_soon(_run_in_scope, scope, action)

    async def stop(self) -> None:
        self._armed += 1
        if self._reaper is not None:
            self._reaper.disarm(self)
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    def fire(self) -> None:
        """The deadline passed (or the server is stopping): close the idle connection.

        A connection that is already gone has nothing to close: Hypercorn's task group drops
        its nursery (``None``) when it exits, and a closed nursery refuses new tasks.
        """
        nursery = getattr(self._task_group, "_nursery", None)
        if nursery is None:
            return
        try:
            nursery.start_soon(self._close_if_still_idle, self._armed)
        except RuntimeError:  # the nursery is closing
            pass

    async def _close_if_still_idle(self, armed: int) -> None:
        if armed == self._armed:  # no request started since the timer was set
            with trio.CancelScope(shield=True):
                await self._action()


async def _run_in_scope(scope: trio.CancelScope, action: Any) -> None:
    with scope:
        await action()


class GuardedTCPServer(TCPServer):
    """Hypercorn's per-connection server with two fixes the gateway depends on.

    * Writes: Hypercorn shields every socket write from cancellation, so a client that
      stops reading (a never-reading SSE client) parks the response task for ever: no
      send timeout can fire, the connection and its session are never released, and
      graceful shutdown hangs. Here a write that makes no progress for
      ``sse_send_timeout_s`` closes the connection; the application then sees a disconnect.
    * Closing: ``_close`` runs ``send_eof`` before ``aclose``; when the caller is being
      cancelled (Quart-Trio cancels its request task right after the response) the first
      raises ``Cancelled`` and the socket is never closed, so a ``Connection: close``
      response kept its descriptor until the client gave up. It is shielded here.
    * A client that hangs up on an idle keep-alive connection: the connection waited for its
      keep-alive timer before closing, one descriptor per departed client for that long.
    * Per request cost: a response write that fits the socket buffer is one non-blocking
      write; keep-alive timers are kept by one :class:`IdleReaper` task, not a task per
      idle period; the
      connection is registered so closing it cancels its 2026-07-28 calls (no watcher task).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reaper: IdleReaper | None = getattr(self.config, "northstar_idle_reaper", None)
        self.idle_task = KeepAliveTimer(self._reaper)  # type: ignore[assignment]

    async def _idle_timeout(self) -> None:
        if self._reaper is None:
            await super()._idle_timeout()
        else:  # the reaper already waited out the keep-alive time (or the server is stopping)
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
        stall_s = float(getattr(self.config, "northstar_write_stall_s", 10.0))
        try:
            with trio.CancelScope(shield=True):
                await send_with_stall_limit(self.stream, data, stall_s)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.protocol.handle(Closed())
        except trio.TooSlowError:
            log.info("closing a connection whose client stopped reading", extra={"stall_s": stall_s})
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        client, server = self._addresses()
        calls = fastpath.connection_opened(client, server)
        try:
            await super()._read_data()
        finally:
            if calls is not None:  # the client's end is closed: cancel the calls still running for it
                fastpath.connection_closed(client, server, calls)
            # Reading is over (EOF, reset, closed, or cancelled): nothing more can arrive. The
            # keep-alive timer of an idle connection would otherwise hold it, and its descriptor,
            # open until it fired (read_timeout_s) after the client had already gone. ``stop``
            # never waits, so it is safe here even while Cancelled propagates.
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
