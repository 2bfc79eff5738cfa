"""Mailboxes and references: the caller's side of an actor.

A :class:`_Mailbox` is a bounded trio memory channel of :class:`_Envelope`
objects plus counters.  It belongs to whoever owns the actor's *slot*
(``spawn`` or a supervisor child), not to one actor instance, so a restarted
instance keeps reading the same mailbox and an :class:`ActorRef` stays valid
across restarts.

An envelope carries one message and, for calls, a reply slot (``trio.Event``
plus a value or an error).  The actor handling it stores its per-request
``trio.CancelScope`` in the envelope; a caller that times out or is cancelled
marks the envelope abandoned and cancels that scope, so the callee's work for
that request stops promptly (or never starts).  No task or nursery is created
per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import trio

from ._errors import ActorError, ActorStopped, Busy, CallTimeout

MsgT = TypeVar("MsgT")
ReplyT = TypeVar("ReplyT")


class _Envelope(Generic[MsgT, ReplyT]):
    """One message in a mailbox, with the reply path back to its caller."""

    __slots__ = ("_done", "_error", "_reply", "abandoned", "declined", "msg", "scope")

    def __init__(self, msg: MsgT, *, wants_reply: bool, declined: bool = False) -> None:
        self.msg = msg
        self.abandoned = False
        self.declined = declined  # answer_now already said NOT_NOW to it (in the caller's task)
        self.scope: trio.CancelScope | None = None
        self._done: trio.Event | None = trio.Event() if wants_reply else None
        self._reply: ReplyT | None = None
        self._error: ActorError | None = None

    @property
    def settled(self) -> bool:
        """True once a reply or an error has been delivered (never for casts)."""
        return self._done is not None and self._done.is_set()

    @property
    def pending(self) -> bool:
        """True while a caller still expects a reply or an error."""
        return self._done is not None and not self._done.is_set()

    def succeed(self, reply: ReplyT) -> None:
        if self.pending:
            self._reply = reply
            cast(trio.Event, self._done).set()

    def fail(self, error: ActorError) -> None:
        if self.pending:
            self._error = error
            cast(trio.Event, self._done).set()

    def abandon(self) -> None:
        """Called by the caller when it stops waiting: skip or cancel the work."""
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()

    async def wait(self) -> None:
        await cast(trio.Event, self._done).wait()

    def result(self) -> ReplyT:
        if self._error is not None:
            raise self._error
        return cast(ReplyT, self._reply)


@dataclass(frozen=True)
class MailboxStats:
    """A snapshot of one actor's mailbox.

    ``queued``: messages waiting in the mailbox; ``capacity``: its bound;
    ``in_flight``: messages being handled right now; ``processed``: messages
    handled to completion; ``crashes``: actor instances that ended with an
    exception; ``restarts``: instances started after the first one.
    """

    name: str
    queued: int
    capacity: int
    in_flight: int
    processed: int
    crashes: int
    restarts: int


class _Mailbox:
    """The slot-owned mailbox: channel ends, lifecycle flags and counters."""

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.in_flight = 0
        self.processed = 0
        self.crashes = 0
        self.starts = 0
        self.serving = False
        # Set while the instance waits for its next message with nothing queued or on its way:
        # a caller may then have ``answer_now`` run in its own task (``ActorRef.call``), which is
        # the order the loop would have served it in, without the two scheduler passes.
        self.idle_answer: Callable[[Any], tuple[bool, Any]] | None = None
        self._open()

    def _open(self) -> None:
        channel = trio.open_memory_channel[_Envelope[Any, Any]](self.capacity)
        self.send, self.receive = channel
        self.closed = False
        self.released = False

    def ensure_open(self) -> None:
        """Give a stopped mailbox fresh channels (its slot is being started again)."""
        if self.closed:
            self.release()
            self._open()

    def close(self) -> None:
        """Refuse new messages; queued ones are still served, then the reader sees the end."""
        self.closed = True
        self.idle_answer = None
        self.send.close()

    def release(self) -> None:
        """No instance will serve this mailbox again: fail what is queued, close it."""
        self.close()
        if self.released:
            return
        self.released = True
        while True:
            try:
                envelope = self.receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            envelope.fail(ActorStopped(self.name))
        self.receive.close()

    def stats(self) -> MailboxStats:
        return MailboxStats(
            name=self.name,
            queued=self.receive.statistics().current_buffer_used,
            capacity=self.capacity,
            in_flight=self.in_flight,
            processed=self.processed,
            crashes=self.crashes,
            restarts=max(0, self.starts - 1),
        )


class ActorRef(Generic[MsgT, ReplyT]):
    """A handle for sending messages to an actor; stable across restarts.

    Obtained from ``spawn`` or ``Supervisor.get``; never constructed directly.
    """

    __slots__ = ("_box",)

    def __init__(self, box: _Mailbox) -> None:
        self._box = box

    def __repr__(self) -> str:
        return f"<ActorRef {self._box.name!r}>"

    @property
    def name(self) -> str:
        return self._box.name

    @property
    def running(self) -> bool:
        """True while an actor instance is serving the mailbox."""
        return self._box.serving

    def stats(self) -> MailboxStats:
        return self._box.stats()

    async def call(self, msg: MsgT, *, timeout: float | None = 5.0) -> ReplyT:
        """Send ``msg`` and wait for the reply.

        ``timeout`` covers both waiting for mailbox space and waiting for the
        reply; when it expires :class:`CallTimeout` is raised.  ``None`` sets no
        deadline of the call's own: the caller's cancel scopes bound the wait
        (one scope fewer when the caller has its own deadline anyway).  If the
        caller times out or is cancelled, the actor's work on this request is
        cancelled (or skipped if it has not started).

        When the actor is idle (waiting, nothing queued or on its way) and answers
        ``msg`` with ``answer_now``, it is answered in the caller's task, at once:
        the order the serving loop would have kept, without its two scheduler passes.
        """
        answer = self._box.idle_answer
        declined = False
        if answer is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            answered, reply = answer(msg)  # ActorCrashed (the instance crashes) if answer_now raised
            if answered:
                return cast(ReplyT, reply)
            declined = True  # for handle: answer_now is not asked twice
        envelope: _Envelope[MsgT, ReplyT] = _Envelope(msg, wants_reply=True, declined=declined)
        return await self._request(envelope, timeout, wait_for_space=True)

    async def try_call(self, msg: MsgT, *, timeout: float | None = 5.0) -> ReplyT:
        """Like :meth:`call`, but raise :class:`Busy` at once if the mailbox is full."""
        envelope: _Envelope[MsgT, ReplyT] = _Envelope(msg, wants_reply=True)
        self._put_nowait(envelope)
        return await self._request(envelope, timeout, wait_for_space=False)

    async def cast(self, msg: MsgT, *, timeout: float = 5.0) -> None:
        """Send ``msg`` without waiting for handling; wait up to ``timeout`` for space."""
        envelope: _Envelope[MsgT, ReplyT] = _Envelope(msg, wants_reply=False)
        with trio.move_on_after(timeout) as scope:
            await self._put(envelope)
        if scope.cancelled_caught:
            raise CallTimeout(self.name, timeout)

    def try_cast(self, msg: MsgT) -> None:
        """Send ``msg`` without waiting at all; raise :class:`Busy` if the mailbox is full."""
        envelope: _Envelope[MsgT, ReplyT] = _Envelope(msg, wants_reply=False)
        self._put_nowait(envelope)

    async def _request(
        self, envelope: _Envelope[MsgT, ReplyT], timeout: float | None, *, wait_for_space: bool
    ) -> ReplyT:
        if timeout is None:
            await self._exchange(envelope, wait_for_space)
            return envelope.result()
        if timeout != timeout:  # NaN: as trio.move_on_after would
            raise ValueError("timeout must not be NaN")
        with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
            await self._exchange(envelope, wait_for_space)
        if scope.cancelled_caught and not envelope.settled:
            raise CallTimeout(self.name, timeout)
        return envelope.result()

    async def _exchange(self, envelope: _Envelope[MsgT, ReplyT], wait_for_space: bool) -> None:
        try:
            if wait_for_space:
                await self._put(envelope)
            await envelope.wait()
        finally:
            if not envelope.settled:
                envelope.abandon()

    async def _put(self, envelope: _Envelope[MsgT, ReplyT]) -> None:
        # With room in the mailbox the message goes in without a scheduler pass of its own
        # (``send`` would take one): the caller yields once, waiting for the reply. A caller
        # already cancelled still sends nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._box.send.send_nowait(envelope)
            self._box.idle_answer = None  # one is on its way: the next caller queues behind it
            return
        except trio.WouldBlock:
            pass
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(self.name) from None
        try:
            await self._box.send.send(envelope)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(self.name) from None
        self._box.idle_answer = None

    def _put_nowait(self, envelope: _Envelope[MsgT, ReplyT]) -> None:
        try:
            self._box.send.send_nowait(envelope)
            self._box.idle_answer = None
        except trio.WouldBlock:
            raise Busy(self.name, self._box.capacity) from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(self.name) from None
