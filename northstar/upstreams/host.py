"""Running upstreams: one supervised unit per upstream, started and stopped at run time.

Each upstream runs as a dynamic, TEMPORARY child of a supervisor the caller names (the
runtime's ``upstreams`` supervisor once integrated): its own small supervisor with two
children, in order::

    upstream:<name>                    Supervisor, one_for_one, max_restarts within period
    ├── upstream:<name>/session        the task owning the MCP client session (and the
    │                                  stdio child process): cancelled on stop, which stops
    │                                  the process (the SDK's shutdown: close stdin, SIGTERM,
    │                                  SIGKILL, the whole process group)
    └── upstream:<name>/actor          UpstreamActor: the message shell; its ActorRef is
                                       stable across restarts of either child

A crash of either child restarts that child; past the unit's restart intensity only this
upstream stops (its callers get ``upstream_unavailable``), never its neighbours or the
gateway. The session object (state, breaker, tools) belongs to the unit and survives
restarts of its children.

:class:`UpstreamHandle` is what callers hold: ``call`` / ``tools`` / ``refresh`` /
``approve`` / ``status`` send the actor its messages and turn runtime failures (the actor
stopped, crashed, busy, late) into ``upstream_unavailable`` / ``upstream_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import actors
from northstar.common.errors import NorthstarError, UpstreamTimeout, UpstreamUnavailable
from northstar.upstreams.actor import UpstreamActor, bad_call
from northstar.upstreams.messages import (
    Approve,
    Call,
    CallReply,
    EventSink,
    ListTools,
    ProgressFn,
    Refresh,
    ToolsReply,
    UpstreamMessage,
)
from northstar.upstreams.session import UpstreamSession
from northstar.upstreams.spec import UpstreamSpec
from northstar.upstreams.state import UpstreamStatus

log = logging.getLogger("northstar.upstreams")

MAILBOX = 1024
GRACE_S = 5.0  # on top of the upstream's own bounds, for the mailbox and the reply


def unit_id(name: str) -> str:
    return f"upstream:{name}"


@dataclass(frozen=True, slots=True)
class UpstreamHandle:
    """A running upstream: its actor ref and its session (read-only use: status, tools)."""

    name: str
    ref: actors.ActorRef[UpstreamMessage, Any]
    session: UpstreamSession
    unit: actors.Supervisor

    def _unavailable(self, why: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"upstream {self.name}: {why}", upstream=self.name, retry_after=1)

    @property
    def max_concurrency(self) -> int:
        return self.session.spec.max_concurrency

    async def ask(self, msg: UpstreamMessage, timeout: float) -> Any:
        try:
            return await self.ref.call(msg, timeout=timeout)
        except actors.CallTimeout:
            raise UpstreamTimeout(f"upstream {self.name} did not answer in time", upstream=self.name,
                                  timeout_s=timeout) from None
        except actors.Busy:
            raise self._unavailable("too many calls are queued") from None
        except actors.ActorCrashed:
            raise self._unavailable("its actor crashed; it is being restarted") from None
        except actors.ActorStopped:
            raise self._unavailable("it is stopped") from None

    async def call(self, tool: str, arguments: Mapping[str, Any] | None = None, *, pin: str | None = None,
                   timeout_s: float | None = None, progress: ProgressFn | None = None,
                   request_id: str | None = None) -> CallReply:
        limit = self.session.spec.call_timeout_s
        bound = (limit if timeout_s is None else min(timeout_s, limit)) + GRACE_S
        msg = Call(tool, dict(arguments or {}), pin=pin, timeout_s=timeout_s, progress=progress, request_id=request_id)
        try:
            reply: CallReply = await self.ask(msg, bound)
        except NorthstarError as err:  # the actor is gone, busy or late: still an answer
            return CallReply(None, err)
        return reply

    async def call_inline(self, tool: str, arguments: Mapping[str, Any], *, pin: str | None = None,
                          timeout_s: float | None = None, progress: ProgressFn | None = None,
                          request_id: str | None = None) -> CallReply:
        """The same call, run in the caller's own task: no mailbox hop and no task per call.

        This is the gateway's call path (the caller already waits under its own deadline and
        cancel scope): cancelling the caller cancels the upstream request, and the SDK sends
        ``notifications/cancelled``. The session's own bounds apply as for :meth:`call`; a
        stopped unit answers ``upstream_unavailable`` (its session says it is stopped).
        """
        msg = Call(tool, arguments, pin=pin, timeout_s=timeout_s, progress=progress, request_id=request_id)
        bad = bad_call(msg)
        if bad is not None:
            return CallReply(None, bad)
        return await self.session.call(msg)

    async def tools(self, wait_s: float = 0.0) -> ToolsReply:
        reply: ToolsReply = await self.ask(ListTools(wait_s), wait_s + GRACE_S)
        return reply

    async def refresh(self, wait_s: float = 10.0) -> ToolsReply:
        reply: ToolsReply = await self.ask(Refresh(wait_s), wait_s + GRACE_S)
        return reply

    async def approve(self, pins: Mapping[str, str]) -> ToolsReply:
        reply: ToolsReply = await self.ask(Approve(dict(pins)), GRACE_S)
        return reply

    def status(self) -> UpstreamStatus:
        """The state of the upstream, read directly (works while the actor is busy or gone)."""
        return self.session.status()


class UpstreamHost:
    """Starts and stops upstream units as dynamic children of ``supervisor()``."""

    def __init__(self, supervisor: Callable[[], actors.Supervisor | None], *, max_restarts: int = 5,
                 period: float = 60.0, shutdown_timeout: float = 15.0) -> None:
        self._supervisor = supervisor
        self.max_restarts = max_restarts
        self.period = period
        self.shutdown_timeout = shutdown_timeout
        self._running: dict[str, UpstreamHandle] = {}

    def _current(self) -> actors.Supervisor:
        sup = self._supervisor()
        if sup is None:
            raise UpstreamUnavailable("the upstreams supervisor is not running", retry_after=1)
        return sup

    def unit(self, session: UpstreamSession) -> actors.Supervisor:
        """The supervisor of one upstream (its two children), not yet started."""
        name = session.name
        children = [
            actors.ChildSpec(id=f"{unit_id(name)}/session", start=session.run),
            actors.actor_child(f"{unit_id(name)}/actor", lambda: UpstreamActor(session), capacity=MAILBOX),
        ]
        return actors.Supervisor(unit_id(name), children, max_restarts=self.max_restarts, period=self.period)

    async def start(self, spec: UpstreamSpec, *, pins: Mapping[str, str] | None = None,
                    on_event: EventSink | None = None) -> UpstreamHandle:
        """Start ``spec``'s upstream (replacing a running one of the same name); returns its handle."""
        await self.stop(spec.name)
        session = UpstreamSession(spec, pins=pins, on_event=on_event)
        unit = self.unit(session)
        child = actors.supervisor_child(unit, restart=actors.Restart.TEMPORARY,
                                        shutdown_timeout=self.shutdown_timeout)
        try:
            await self._current().start_child(child)
        except actors.ActorStopped:
            raise UpstreamUnavailable("the upstreams supervisor is stopping", retry_after=1) from None
        ref: actors.ActorRef[UpstreamMessage, Any] = unit.get(f"{unit_id(spec.name)}/actor")  # type: ignore[assignment]
        handle = UpstreamHandle(spec.name, ref, session, unit)
        self._running[spec.name] = handle
        log.info("upstream started", extra={"upstream": spec.name, "transport": spec.transport})
        return handle

    async def stop(self, name: str) -> bool:
        """Stop an upstream (its process too); False if it was not running."""
        handle = self._running.pop(name, None)
        sup = self._supervisor()
        if handle is None or sup is None:
            return False
        try:
            await sup.terminate_child(unit_id(name))
        except KeyError:  # it gave up on its own (restart intensity) or the supervisor was replaced
            pass
        log.info("upstream stopped", extra={"upstream": name})
        return True

    def forget_all(self) -> None:
        """Its supervisor is gone (and every unit with it): nothing is running any more."""
        self._running.clear()

    def get(self, name: str) -> UpstreamHandle | None:
        return self._running.get(name)

    def names(self) -> list[str]:
        return sorted(self._running)
