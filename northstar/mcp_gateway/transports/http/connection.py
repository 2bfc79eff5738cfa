"""Per-connection behaviour of the HTTP server: keep-alive timers and connection notices.

Hypercorn runs each connection; :mod:`northstar.compat.hypercorn` (the one place that
touches Hypercorn's internals) lets the gateway plug into it through
:class:`~northstar.compat.hypercorn.ConnectionHooks`, which :class:`GatewayConnections`
implements: one reaper task keeps every idle connection's keep-alive timer
(:class:`IdleReaper`), and a connection whose client closed it cancels the 2026-07-28 calls
it carried (:func:`~northstar.mcp_gateway.transports.http.fastpath.connection_opened`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from northstar.compat.hypercorn import spawn_if_open
from northstar.mcp_gateway.transports.http import fastpath
from northstar.mcp_gateway.transports.http.express import ExpressLane

log = logging.getLogger("northstar.server")


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

    Hypercorn calls ``restart`` when the connection goes idle (``action`` closes it) and
    ``stop`` when a request starts or reading ends; neither switches tasks.
    """

    __slots__ = ("_action", "_armed", "_reaper", "_task_group")

    def __init__(self, reaper: IdleReaper) -> None:
        self._reaper = reaper
        self._task_group: Any = None
        self._action: Callable[[], Awaitable[None]] | None = None
        self._armed = 0  # bumped on every restart and stop: a firing for an older one is stale

    async def restart(self, task_group: Any, action: Callable[[], Awaitable[None]]) -> None:
        self._armed += 1
        self._task_group, self._action = task_group, action
        self._reaper.arm(self)

    async def stop(self) -> None:
        self._armed += 1
        self._reaper.disarm(self)

    def fire(self) -> None:
        """The deadline passed (or the server is stopping): close the idle connection.

        A connection that is already gone has nothing to close (its task group refuses the task).
        """
        if self._task_group is not None:
            spawn_if_open(self._task_group, self._close_if_still_idle, self._armed)

    async def _close_if_still_idle(self, armed: int) -> None:
        if armed == self._armed and self._action is not None:  # no request started since the timer was set
            with trio.CancelScope(shield=True):
                await self._action()


class GatewayConnections:
    """The gateway's :class:`~northstar.compat.hypercorn.ConnectionHooks`: reaper-kept
    keep-alive timers, and the fast path's registry of live connections."""

    def __init__(self, reaper: IdleReaper, express: ExpressLane | None = None) -> None:
        self.reaper = reaper
        self.lane = express

    def express(self) -> ExpressLane | None:
        return self.lane

    def keep_alive_timer(self) -> KeepAliveTimer:
        return KeepAliveTimer(self.reaper)

    def opened(self, client: Any, server: Any) -> set[trio.CancelScope] | None:
        return fastpath.connection_opened(client, server)

    def closed(self, client: Any, server: Any, calls: set[trio.CancelScope] | None) -> None:
        if calls is not None:  # the client's end is closed: cancel the calls still running for it
            fastpath.connection_closed(client, server, calls)
