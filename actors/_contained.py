"""Containment: a child whose crash storm takes down only itself, and is retried later.

A supervisor's restart intensity is a fuse for the whole subtree: past it, the supervisor
escalates, and at the root that ends the process. For a subsystem whose failure should
cost only its own service (a store, a tool, a policy refresher) that is the wrong trade.
:func:`contained` wraps one child spec in its own one-child supervisor, run by a
*containing* start callable:

* within the inner supervisor's intensity the child is restarted as usual (an actor keeps
  its mailbox, so its :class:`~actors.ActorRef` stays valid);
* past it, the inner supervisor gives up and the subsystem is *down*: its mailbox is
  released (callers get :class:`~actors.ActorStopped` at once, which the application turns
  into "unavailable"), the crash is logged, and nothing escalates;
* after a backoff delay (:class:`Backoff`: ``initial * factor ** n``, capped at
  ``maximum``, ``n`` = outages in a row) the inner supervisor is started again; an outage
  streak ends once the subsystem stayed up for ``maximum`` seconds.

Only the very first start is not contained: a subsystem that cannot start at all fails its
parent's start (a process that cannot boot should say so, not serve 503 for ever).
:class:`~actors.ChildStats` of a contained child reports ``running=False`` while it is down,
its inner actor's mailbox, and a :class:`~actors.ContainedStatus`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import trio

from ._errors import SupervisorEscalation
from ._mailbox import MailboxStats
from ._supervisor import ChildSpec, ContainedStatus, Restart, Supervisor, _ManagedStart

log = logging.getLogger("actors.contained")


@dataclass(frozen=True)
class Backoff:
    """Delays before a contained child that went down is started again (seconds)."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and math.isfinite(self.maximum) and self.factor >= 1):
            raise ValueError("Backoff needs 0 < initial <= maximum (finite) and factor >= 1")

    def delay(self, streak: int) -> float:
        """The wait after the ``streak``-th outage in a row (1, 2, ...)."""
        exponent = min(max(streak, 1) - 1, 64)  # 2.0 ** 64 is still a float; the cap applies anyway
        return min(self.maximum, self.initial * self.factor**exponent)


class _Reported(trio.TaskStatus[Supervisor]):
    """The inner supervisor's readiness: marks the child up and, the first time, reports its value."""

    def __init__(self, owner: _ContainedStart, outer: trio.TaskStatus[Any]) -> None:
        self.owner = owner
        self.outer = outer

    def started(self, value: Any = None) -> None:
        owner = self.owner
        owner._came_up()
        if not owner.reported:
            owner.reported = True
            self.outer.started(owner.inner.get(owner.child_id))


class _ContainedStart(_ManagedStart):
    """Runs the inner supervisor; past its intensity, waits out a backoff and runs it again."""

    def __init__(self, spec: ChildSpec, *, max_restarts: int, period: float, backoff: Backoff) -> None:
        self.child_id = spec.id
        self.inner = Supervisor(spec.id, [spec], max_restarts=max_restarts, period=period)
        self.backoff = backoff
        self.reported = False
        self._up = False
        self._outages = 0
        self._streak = 0
        self._up_since = 0.0
        self._last_error: str | None = None
        self._retry_at: float | None = None
        self._stopping = False
        self._wake = trio.Event()

    async def __call__(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.reported, self._stopping, self._wake = False, False, trio.Event()
        try:
            while not self._stopping:
                try:
                    await self.inner.run(task_status=_Reported(self, task_status))
                    return  # an orderly stop
                except SupervisorEscalation as exc:
                    if not self.reported:
                        raise  # the first start failed: the parent's start fails with it
                    self._went_down(exc)
                assert self._retry_at is not None
                with trio.move_on_at(self._retry_at):
                    await self._wake.wait()
        finally:
            self._up, self._retry_at = False, None

    def _came_up(self) -> None:
        if self._outages and not self._up:
            log.warning("%s is up again", self.child_id)
        self._up, self._retry_at = True, None
        self._up_since = trio.current_time()

    def _went_down(self, exc: SupervisorEscalation) -> None:
        now = trio.current_time()
        stayed_up = self._up and now - self._up_since >= self.backoff.maximum  # _up: this attempt came up
        self._streak = 1 if stayed_up else self._streak + 1
        delay = self.backoff.delay(self._streak)
        cause = exc.__cause__
        self._up, self._outages, self._retry_at = False, self._outages + 1, now + delay
        self._last_error = type(cause).__name__ if cause is not None else None
        # The operator must see it; the process does not end for it.
        log.error("%s is down: its restart intensity ran out (%s); starting it again in %.3gs",
                  self.child_id, self._last_error, delay, exc_info=cause)

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.inner._request_stop()

    def up(self) -> bool:
        return self._up

    def mailbox(self) -> MailboxStats | None:
        children = self.inner.stats().children
        return children[0].mailbox if children else None

    def contained(self) -> ContainedStatus:
        return ContainedStatus(id=self.child_id, up=self._up, outages=self._outages, last_error=self._last_error,
                               retry_at=self._retry_at)


def contained(
    spec: ChildSpec,
    *,
    max_restarts: int = 5,
    period: float = 10.0,
    backoff: Backoff | None = None,
    shutdown_timeout: float = math.inf,
) -> ChildSpec:
    """``spec`` contained: restarted within its own intensity, else down for a backoff, then retried.

    The returned spec has the same id; its started value is the child's (an actor child's
    :class:`~actors.ActorRef`, which stays valid through restarts and outages). It is
    TRANSIENT: it ends only when stopped, and a fault of the containment itself is still a
    crash for its parent. ``shutdown_timeout`` bounds the stop on top of the child's own.
    """
    start = _ContainedStart(spec, max_restarts=max_restarts, period=period, backoff=backoff or Backoff())
    return ChildSpec(id=spec.id, start=start, restart=Restart.TRANSIENT, shutdown_timeout=shutdown_timeout)
