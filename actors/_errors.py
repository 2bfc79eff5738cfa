"""Errors raised by the actor runtime.

Every error the runtime raises to a caller derives from :class:`ActorError`,
so ``except ActorError`` covers them all::

    ActorError
    ├── Busy                  mailbox full on a non-waiting send (try_call / try_cast)
    ├── CallTimeout           no room / no reply within the timeout (also a TimeoutError)
    ├── ActorCrashed          the actor crashed while handling (or holding) the request
    ├── ActorStopped          the actor is not running and will not serve the request
    └── SupervisorEscalation  a supervisor gave up; raised out of Supervisor.run

Errors carry names and types, never the text of an underlying exception, so
internals of one actor do not leak to its callers.  The original exception of a
crash stays inside the runtime: it is re-raised by ``spawn`` and becomes the
``__cause__`` of a ``SupervisorEscalation``.
"""

from __future__ import annotations


class ActorError(Exception):
    """Base class of every error raised by the actor runtime."""


class Busy(ActorError):
    """The mailbox was full and the send was not allowed to wait."""

    def __init__(self, actor: str, capacity: int) -> None:
        super().__init__(f"actor {actor!r} is busy: mailbox full (capacity {capacity})")
        self.actor = actor
        self.capacity = capacity


class CallTimeout(ActorError, TimeoutError):
    """No mailbox space, or no reply, within ``timeout`` seconds."""

    def __init__(self, actor: str, timeout: float) -> None:
        super().__init__(f"actor {actor!r} did not answer within {timeout:g}s")
        self.actor = actor
        self.timeout = timeout


class ActorCrashed(ActorError):
    """The actor crashed while handling (or holding) this request.

    ``cause_type`` is the class name of the exception that crashed it; the
    exception's message is deliberately not included.
    """

    def __init__(self, actor: str, cause_type: str) -> None:
        super().__init__(f"actor {actor!r} crashed ({cause_type})")
        self.actor = actor
        self.cause_type = cause_type


class ActorStopped(ActorError):
    """The actor is not running: stopped, removed, or given up on."""

    def __init__(self, actor: str) -> None:
        super().__init__(f"actor {actor!r} is stopped")
        self.actor = actor


class SupervisorEscalation(ActorError):
    """A supervisor gave up on ``child``; its ``__cause__`` is the child's exception."""

    def __init__(self, supervisor: str, child: str, reason: str = "restart intensity exceeded") -> None:
        super().__init__(f"supervisor {supervisor!r} gave up on child {child!r}: {reason}")
        self.supervisor = supervisor
        self.child = child
