"""Actors and the loop that runs one actor instance over a mailbox.

:class:`Actor` is the base class users subclass.  :func:`spawn` runs a single
instance (no restarts) in the caller's nursery; supervised children reuse the
same instance loop, :func:`_run_instance`, over a mailbox their slot owns.

Each message is handled inside its own ``trio.CancelScope`` stored in the
envelope, so a caller can cancel its own request.  With ``max_concurrency == 1``
messages are handled inline by the instance task; with ``N > 1`` one
long-lived nursery runs up to ``N`` handler tasks, bounded by a semaphore.

An actor may also answer some messages synchronously with :meth:`Actor.answer_now`:
the serving loop calls it first and, unless it returns :data:`NOT_NOW`, replies with
its result at once, with no task and no cancel scope (a decision made from the actor's
own state, say). Everything else goes to ``handle``. While the instance is idle (waiting
for a message, none queued or on its way), ``ActorRef.call`` runs ``answer_now`` in the
caller's own task instead: the same order, without the two scheduler passes of the mailbox.
It still runs in no other task's stead and never while a message waits ahead of it; a
crash there crashes the instance as one in the loop does.

An exception escaping ``handle`` (or ``answer_now``) crashes the instance: every in-flight request
gets :class:`ActorCrashed`, queued messages stay in the mailbox, and the
original exception (never an exception group) propagates out of the instance.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Final, Generic

import trio

from ._errors import ActorCrashed, ActorError, ActorStopped
from ._mailbox import ActorRef, MsgT, ReplyT, _Envelope, _Mailbox

#: Queued envelopes an actor takes in a row before it yields to the scheduler anyway.
BURST: Final = 64


class NotNow:
    """The type of :data:`NOT_NOW`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_NOW"


#: Returned by :meth:`Actor.answer_now` for a message that ``handle`` must serve.
NOT_NOW: Final = NotNow()


class Actor(abc.ABC, Generic[MsgT, ReplyT]):
    """Base class for actors: subclass it and implement :meth:`handle`.

    ``name`` comes from the constructor, else a class attribute, else the class
    name.  ``max_concurrency`` > 1 lets up to that many messages be handled at
    the same time, each in its own task and cancel scope.
    """

    name: str = ""
    max_concurrency: int = 1

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        elif not self.name:
            self.name = type(self).__name__

    async def on_start(self) -> None:
        """Runs before the actor is reported ready; an exception fails the start."""

    @abc.abstractmethod
    async def handle(self, msg: MsgT) -> ReplyT:
        """Handle one message; the return value is the reply (ignored for casts)."""

    def answer_now(self, msg: MsgT) -> ReplyT | NotNow:
        """Answer ``msg`` synchronously, in the serving loop, or return :data:`NOT_NOW`.

        Override it for messages whose reply needs no waiting: they are answered in
        arrival order without a task or a cancel scope each. It must not block.
        """
        return NOT_NOW

    async def on_stop(self) -> None:
        """Bounded cleanup after an orderly stop, once queued messages are served."""


class _Crash:
    """The message an idle answer that raised leaves in the mailbox: the instance crashes on it."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class _Run:
    """One incarnation of an actor over a mailbox; remembers the first crash."""

    __slots__ = ("actor", "box", "burst", "crash", "idle_answer", "quick")

    def __init__(self, actor: Actor[Any, Any], box: _Mailbox) -> None:
        self.actor = actor
        self.box = box
        self.burst = 0  # envelopes taken in a row without yielding
        self.crash: Exception | None = None
        self.quick = type(actor).answer_now is not Actor.answer_now
        self.idle_answer = self._answer_idle if self.quick else None

    def _answer_idle(self, msg: Any) -> tuple[bool, Any]:
        """``answer_now`` in a caller's task while this instance waits with nothing queued.

        A crash is this instance's, as in the loop: the caller gets :class:`ActorCrashed`, and
        the exception is left in the mailbox for the instance to raise (the supervisor sees the
        original exception; what arrives meanwhile queues, as behind any crash).
        """
        box = self.box
        try:
            reply = self.actor.answer_now(msg)
        except Exception as exc:
            self.crash = exc
            box.idle_answer = None
            try:
                box.send.send_nowait(_Envelope(_Crash(exc), wants_reply=False))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # closing anyway: the instance ends without serving more
            raise self.failure() from None
        if reply is NOT_NOW:
            return False, None
        box.processed += 1
        return True, reply

    def failure(self) -> ActorError:
        """The error owed to a request this incarnation could not finish."""
        if self.crash is not None:
            return ActorCrashed(self.box.name, type(self.crash).__name__)
        return ActorStopped(self.box.name)


async def _process(run: _Run, envelope: _Envelope[Any, Any]) -> None:
    if envelope.abandoned:
        return
    box = run.box
    box.in_flight += 1
    try:
        with trio.CancelScope() as envelope.scope:
            reply = await run.actor.handle(envelope.msg)
            envelope.succeed(reply)
            box.processed += 1
    except Exception as exc:
        if run.crash is None:
            run.crash = exc
        raise
    finally:
        box.in_flight -= 1
        if envelope.pending:
            envelope.fail(run.failure())


def _answered_now(run: _Run, envelope: _Envelope[Any, Any]) -> bool:
    """Serve ``envelope`` with ``answer_now`` if the actor answers it now; False if not."""
    if envelope.abandoned:
        return True
    if isinstance(envelope.msg, _Crash):  # an idle answer raised: crash as the loop would have
        raise envelope.msg.exc
    if envelope.declined:
        return False
    try:
        reply = run.actor.answer_now(envelope.msg)
    except Exception as exc:
        run.crash = exc
        envelope.fail(run.failure())
        raise
    if reply is NOT_NOW:
        return False
    envelope.succeed(reply)
    run.box.processed += 1
    return True


async def _next(receive: trio.MemoryReceiveChannel[_Envelope[Any, Any]], run: _Run) -> _Envelope[Any, Any] | None:
    """The next envelope, or None at the end of the mailbox.

    A queued envelope is taken without a scheduler pass (``receive`` takes one even when a
    message is waiting); after ``BURST`` such envelopes in a row the loop yields anyway, so a
    busy actor never holds the event loop for long.
    """
    idle = False
    if run.burst < BURST:
        try:
            envelope = receive.receive_nowait()
        except trio.WouldBlock:
            idle = run.crash is None  # nothing queued: callers may be answered in their own task
        except trio.EndOfChannel:
            return None
        else:
            run.burst += 1
            return envelope
    box = run.box
    if idle and not box.closed:
        box.idle_answer = run.idle_answer
    try:
        envelope = await receive.receive()  # yields, with this envelope already taken
    except trio.EndOfChannel:
        return None
    finally:
        box.idle_answer = None
    run.burst = 1
    return envelope


async def _serve_serial(run: _Run) -> None:
    receive = run.box.receive
    while (envelope := await _next(receive, run)) is not None:
        if run.quick and _answered_now(run, envelope):
            continue
        await _process(run, envelope)


async def _process_in_slot(
    run: _Run, envelope: _Envelope[Any, Any], slots: trio.Semaphore, crash_scope: trio.CancelScope
) -> None:
    try:
        await _process(run, envelope)
    except Exception:
        # Recorded in run.crash and re-raised by _serve_concurrent, outside the
        # nursery, so the crash never turns into an exception group.
        crash_scope.cancel()
    finally:
        slots.release()


async def _serve_concurrent(run: _Run) -> None:
    receive = run.box.receive
    slots = trio.Semaphore(run.actor.max_concurrency)
    async with trio.open_nursery() as nursery:
        while True:
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                await slots.acquire()
            if (envelope := await _next(receive, run)) is None:
                break
            if run.quick:
                try:
                    answered = _answered_now(run, envelope)
                except Exception:
                    # Recorded in run.crash; re-raised below, outside the nursery.
                    nursery.cancel_scope.cancel()
                    break
                if answered:
                    slots.release()
                    continue
            nursery.start_soon(_process_in_slot, run, envelope, slots, nursery.cancel_scope)
    if run.crash is not None:
        raise run.crash


def _check_concurrency(actor: Actor[Any, Any]) -> None:
    limit = actor.max_concurrency
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"actor {actor.name!r}: max_concurrency must be an int >= 1, got {limit!r}")


async def _run_instance(
    actor: Actor[MsgT, ReplyT],
    box: _Mailbox,
    ref: ActorRef[MsgT, ReplyT],
    task_status: trio.TaskStatus[ActorRef[MsgT, ReplyT]],
) -> None:
    """Run one instance until its mailbox is closed and drained, or it crashes."""
    run = _Run(actor, box)
    box.starts += 1
    try:
        _check_concurrency(actor)
        await actor.on_start()
        box.serving = True
        task_status.started(ref)
        if actor.max_concurrency == 1:
            await _serve_serial(run)
        else:
            await _serve_concurrent(run)
        box.serving = False
        await actor.on_stop()
    except Exception:
        box.crashes += 1
        raise
    finally:
        box.serving = False


async def spawn(
    actor_factory: Callable[[], Actor[MsgT, ReplyT]],
    capacity: int = 64,
    *,
    task_status: trio.TaskStatus[ActorRef[MsgT, ReplyT]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one actor instance, without restarts, in the caller's nursery.

    Use as ``ref = await nursery.start(spawn, factory, capacity)``; ``capacity``
    may be positional because ``Nursery.start`` takes no keyword arguments.  The
    reference is reported once ``on_start`` has finished.  Stop the actor by
    cancelling the enclosing scope (for an orderly stop with ``on_stop``,
    supervise it with ``actor_child``).  A crash re-raises the original
    exception; callers still queued or arriving later get ActorStopped.
    """
    actor = actor_factory()
    box = _Mailbox(actor.name, capacity)
    try:
        await _run_instance(actor, box, ActorRef[MsgT, ReplyT](box), task_status)
    finally:
        box.release()
