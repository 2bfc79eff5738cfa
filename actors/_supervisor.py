"""Supervision: child specs, restart types and the one_for_one Supervisor.

A :class:`Supervisor` owns an ordered list of children (:class:`ChildSpec`).
It starts them in order, restarts a child that exits according to its
:class:`Restart` type while the restart intensity (``max_restarts`` within
``period`` seconds of ``trio.current_time()``) allows, and otherwise stops the
remaining children in reverse order and raises :class:`SupervisorEscalation`
so that its own parent sees one meaningful crash.

Children run in the supervisor's nursery inside a wrapper task that turns the
child's exit (return or exception) into a report on an internal channel; child
exceptions therefore never form exception groups.  Cancellation is never
caught: a cancelled supervisor cancels all its children.

``actor_child`` and ``supervisor_child`` build specs whose start object also
knows how to ask the child for an orderly stop and how to release its
resources; such children get ``shutdown_timeout`` to finish before being
cancelled.  Plain start callables are cancelled straight away on stop.
"""

from __future__ import annotations

import abc
import enum
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

import trio

from ._actor import Actor, _run_instance
from ._errors import ActorStopped, SupervisorEscalation
from ._mailbox import ActorRef, MailboxStats, MsgT, ReplyT, _Mailbox

log = logging.getLogger("actors.supervisor")


class Restart(enum.Enum):
    """When a child that exited is started again (OTP semantics)."""

    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit (an exception)
    TEMPORARY = "temporary"  # never restarted


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child.

    ``start`` is an async callable taking ``task_status=``; it must call
    ``task_status.started(value)`` once ready, and ``value`` is what
    ``Supervisor.get(id)`` returns.  ``shutdown_timeout`` bounds an orderly stop
    before the child is cancelled.
    """

    id: str
    start: Callable[..., Awaitable[object]]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0


@dataclass(frozen=True)
class ContainedStatus:
    """The state of a contained child (see :func:`actors.contained`).

    ``up``: serving; ``outages``: times it went down (its restart intensity ran out) since
    its supervisor started; ``last_error``: the class name of the exception behind the last
    outage; ``retry_at``: while down, when (``trio.current_time()``) it is started again.
    """

    id: str
    up: bool
    outages: int = 0
    last_error: str | None = None
    retry_at: float | None = None


@dataclass(frozen=True)
class ChildStats:
    """A snapshot of one child: ``mailbox`` is set for actor children (contained ones too),
    ``contained`` for contained children only. A contained child that is down is not running."""

    id: str
    running: bool
    restarts: int
    mailbox: MailboxStats | None = None
    contained: ContainedStatus | None = None


@dataclass(frozen=True)
class SupervisorStats:
    """A snapshot of a supervisor and its children, in start order."""

    name: str
    running: bool
    children: tuple[ChildStats, ...]


class _ManagedStart(abc.ABC):
    """A start callable that supports an orderly stop and a final release."""

    @abc.abstractmethod
    async def __call__(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Run one incarnation of the child."""

    @abc.abstractmethod
    def request_stop(self) -> None:
        """Ask the running incarnation to finish its work and return."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """The child will not be started again by this supervisor run."""

    def up(self) -> bool:
        """False while the child is alive but not serving (a contained child that is down)."""
        return True

    def mailbox(self) -> MailboxStats | None:
        return None

    def contained(self) -> ContainedStatus | None:
        return None


class _ActorChildStart(_ManagedStart, Generic[MsgT, ReplyT]):
    """Runs actor instances over one mailbox owned by the child slot."""

    def __init__(self, child_id: str, factory: Callable[[], Actor[MsgT, ReplyT]], capacity: int) -> None:
        self._factory = factory
        self.box = _Mailbox(child_id, capacity)
        self.ref = ActorRef[MsgT, ReplyT](self.box)

    async def __call__(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.box.ensure_open()
        await _run_instance(self._factory(), self.box, self.ref, task_status)

    def request_stop(self) -> None:
        self.box.close()

    def release(self) -> None:
        self.box.release()

    def mailbox(self) -> MailboxStats | None:
        return self.box.stats()


class _SupervisorStart(_ManagedStart):
    """Runs a nested supervisor as a child."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    async def __call__(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await self.supervisor.run(task_status=task_status)

    def request_stop(self) -> None:
        self.supervisor._request_stop()


def actor_child(
    id: str,
    factory: Callable[[], Actor[Any, Any]],
    *,
    capacity: int = 64,
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float = 5.0,
) -> ChildSpec:
    """A supervised actor whose :class:`ActorRef` (named ``id``) is stable across restarts."""
    start = _ActorChildStart(id, factory, capacity)
    return ChildSpec(id=id, start=start, restart=restart, shutdown_timeout=shutdown_timeout)


def ref_of(spec: ChildSpec) -> ActorRef[Any, Any]:
    """The :class:`ActorRef` of an actor child (:func:`actor_child`, or one wrapped by
    :func:`~actors.contained`), known before the child starts and stable across its restarts,
    so a composition root can hand it to whoever calls the actor before the tree runs."""
    start: object = spec.start
    while True:
        if isinstance(start, _ActorChildStart):
            return start.ref
        inner = getattr(start, "inner", None)  # a contained child: its one inner child
        if not isinstance(inner, Supervisor) or len(inner._slots) != 1:
            raise TypeError(f"child {spec.id!r} is not an actor child")
        start = inner._slots[0].spec.start


def supervisor_child(
    sup: Supervisor,
    *,
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float = math.inf,
) -> ChildSpec:
    """A nested supervisor as a child (id = its name; started value = the supervisor)."""
    start = _SupervisorStart(sup)
    return ChildSpec(id=sup.name, start=start, restart=restart, shutdown_timeout=shutdown_timeout)


class _StartProbe:
    """Wraps a task status to remember whether the child reported readiness."""

    __slots__ = ("_inner", "reported")

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self._inner = inner
        self.reported = False

    def started(self, value: object = None) -> None:
        self.reported = True
        self._inner.started(value)


class _Slot:
    """A child's place in the supervisor: spec, current incarnation, counters."""

    __slots__ = ("life", "removed", "restarts", "spec", "value")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.life: _Life | None = None
        self.removed = False
        self.restarts = 0
        self.value: object = _UNSET

    @property
    def running(self) -> bool:
        life = self.life
        return life is not None and life.started and not life.exited.is_set()

    def release(self) -> None:
        if isinstance(self.spec.start, _ManagedStart):
            self.spec.start.release()

    def stats(self) -> ChildStats:
        start = self.spec.start
        if not isinstance(start, _ManagedStart):
            return ChildStats(id=self.spec.id, running=self.running, restarts=self.restarts)
        return ChildStats(id=self.spec.id, running=self.running and start.up(), restarts=self.restarts,
                          mailbox=start.mailbox(), contained=start.contained())


class _Life:
    """One incarnation of a child: its cancel scope, exit event and error."""

    __slots__ = ("error", "exited", "scope", "slot", "started")

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot
        self.scope = trio.CancelScope()
        self.exited = trio.Event()
        self.error: Exception | None = None
        self.started = False


_UNSET = object()


def _wants_restart(restart: Restart, error: Exception | None) -> bool:
    if restart is Restart.PERMANENT:
        return True
    return restart is Restart.TRANSIENT and error is not None


class Supervisor:
    """A one_for_one supervisor over an ordered list of children."""

    def __init__(
        self, name: str, children: Sequence[ChildSpec], *, max_restarts: int = 3, period: float = 5.0
    ) -> None:
        if max_restarts < 0 or period <= 0:
            raise ValueError("max_restarts must be >= 0 and period > 0")
        self.name = name
        self._slots = [_Slot(spec) for spec in children]
        self._by_id = {slot.spec.id: slot for slot in self._slots}
        if len(self._by_id) != len(self._slots):
            raise ValueError(f"supervisor {name!r}: child ids must be unique")
        self._max_restarts = max_restarts
        self._period = period
        self._history: deque[float] = deque()
        self._reports: trio.MemorySendChannel[_Life | None] | None = None
        self._finished = trio.Event()
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r}>"

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, report readiness, then supervise until stopped.

        Raises :class:`SupervisorEscalation` (``__cause__``: the child's
        exception) when a child fails to start or restarts too often.
        """
        reports = self._begin()
        escalation: SupervisorEscalation | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                escalation = await self._start_all(nursery)
                if escalation is None:
                    task_status.started(self)
                    escalation = await self._supervise(nursery, reports)
        finally:
            self._end()
        if escalation is not None:
            raise escalation

    def get(self, child_id: str) -> object:
        """The value the child reported when it started; KeyError if there is none."""
        slot = self._by_id[child_id]
        if slot.removed or slot.value is _UNSET:
            raise KeyError(child_id)
        return slot.value

    async def start_child(self, spec: ChildSpec) -> object:
        """Add a child to a running supervisor, after the others; return its started value.

        The child is supervised like the static ones and stopped before them (it is
        last in start order). A start failure is raised here and the child is not kept.
        """
        nursery = self._nursery
        if nursery is None or self._reports is None:
            raise ActorStopped(self.name)
        if spec.id in self._by_id:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        slot = _Slot(spec)
        self._slots.append(slot)
        self._by_id[spec.id] = slot
        error = await self._start_child(nursery, slot)
        if error is not None:
            self._forget(slot)
            raise error
        return slot.value

    async def terminate_child(self, child_id: str) -> None:
        """Stop one child in an orderly way (within its shutdown_timeout) and forget it."""
        slot = self._by_id[child_id]
        slot.removed = True  # its exit report must not trigger a restart
        if slot.running:
            await self._stop_child(slot)
        self._forget(slot)

    def _forget(self, slot: _Slot) -> None:
        slot.removed = True
        slot.release()
        self._by_id.pop(slot.spec.id, None)
        if slot in self._slots:
            self._slots.remove(slot)

    async def stop(self) -> None:
        """Stop the children in reverse order, each gracefully within its shutdown_timeout."""
        finished = self._finished
        if self._request_stop():
            await finished.wait()

    def stats(self) -> SupervisorStats:
        children = tuple(slot.stats() for slot in self._slots)
        return SupervisorStats(name=self.name, running=self._reports is not None, children=children)

    def _request_stop(self) -> bool:
        if self._reports is None:
            return False
        self._reports.send_nowait(None)
        return True

    def _begin(self) -> trio.MemoryReceiveChannel[_Life | None]:
        if self._reports is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._reports, receive = trio.open_memory_channel[_Life | None](math.inf)
        self._finished = trio.Event()
        self._history.clear()
        for slot in self._slots:
            slot.life = None
            slot.removed = False
        return receive

    def _end(self) -> None:
        self._reports = None
        self._nursery = None
        for slot in self._slots:
            slot.release()
        self._finished.set()

    async def _start_all(self, nursery: trio.Nursery) -> SupervisorEscalation | None:
        for slot in self._slots:
            error = await self._start_child(nursery, slot)
            if error is not None:
                await self._stop_children()
                return self._escalation(slot, error, "child failed to start")
        return None

    async def _start_child(self, nursery: trio.Nursery, slot: _Slot) -> Exception | None:
        """Start one incarnation and wait until it is ready; return its start failure, if any."""
        life = _Life(slot)
        slot.life = life
        try:
            slot.value = await nursery.start(self._run_child, life)
        except Exception as exc:
            return exc
        life.started = True
        return None

    async def _run_child(self, life: _Life, *, task_status: trio.TaskStatus[Any]) -> None:
        probe = _StartProbe(task_status)
        try:
            with life.scope:
                await life.slot.spec.start(task_status=probe)
        except Exception as exc:  # outside the scope: also what is left after it strips Cancelled
            if not probe.reported:
                raise  # nursery.start() in _start_child reports it
            life.error = exc
        finally:
            life.exited.set()
        if probe.reported and self._reports is not None:
            self._reports.send_nowait(life)

    async def _supervise(
        self, nursery: trio.Nursery, reports: trio.MemoryReceiveChannel[_Life | None]
    ) -> SupervisorEscalation | None:
        while True:
            life = await reports.receive()
            if life is None:
                await self._stop_children()
                return None
            if life is life.slot.life and not life.slot.removed:
                escalation = await self._on_exit(nursery, life)
                if escalation is not None:
                    return escalation

    async def _on_exit(self, nursery: trio.Nursery, life: _Life) -> SupervisorEscalation | None:
        slot = life.slot
        restart = _wants_restart(slot.spec.restart, life.error)
        if life.error is not None:
            # The operator must see every crash, restarted or not; the exception is whole here.
            log.error("child %s of %s crashed (%s)%s", slot.spec.id, self.name, type(life.error).__name__,
                      "; restarting it" if restart else "", exc_info=life.error)
        elif restart:
            log.warning("child %s of %s exited; restarting it", slot.spec.id, self.name)
        if not restart:
            slot.removed = True
            slot.release()
            return None
        return await self._restart(nursery, slot, life.error)

    async def _restart(
        self, nursery: trio.Nursery, slot: _Slot, error: Exception | None
    ) -> SupervisorEscalation | None:
        while not self._over_intensity():
            slot.restarts += 1
            failure = await self._start_child(nursery, slot)
            if failure is None:
                return None
            error = failure
        await self._stop_children()
        return self._escalation(slot, error, "restart intensity exceeded")

    def _over_intensity(self) -> bool:
        """Record a restart now; True if restarts within ``period`` exceed ``max_restarts``."""
        now = trio.current_time()
        self._history.append(now)
        while self._history[0] <= now - self._period:
            self._history.popleft()
        return len(self._history) > self._max_restarts

    def _escalation(self, slot: _Slot, error: Exception | None, reason: str) -> SupervisorEscalation:
        escalation = SupervisorEscalation(self.name, slot.spec.id, reason)
        escalation.__cause__ = error
        return escalation

    async def _stop_children(self) -> None:
        for slot in reversed(self._slots):
            if slot.running:
                await self._stop_child(slot)

    async def _stop_child(self, slot: _Slot) -> None:
        life = slot.life
        assert life is not None
        start = slot.spec.start
        if isinstance(start, _ManagedStart):
            start.request_stop()
            with trio.move_on_after(slot.spec.shutdown_timeout):
                await life.exited.wait()
        life.scope.cancel()
        await life.exited.wait()
