"""A small supervised actor runtime on Trio (trio and the standard library only).

Model
=====

**Actors and mailboxes.**  An actor is a subclass of :class:`Actor` that
implements ``async def handle(self, msg) -> reply``.  Each actor reads one
*mailbox*: a bounded trio memory channel.  Messages are handled one at a time,
in arrival order, unless ``max_concurrency`` > 1, in which case up to that many
are handled concurrently (each in its own task, in one long-lived nursery).
An actor may answer some messages synchronously in its serving loop
(``answer_now``, returning the reply or :data:`NOT_NOW`): no task, no cancel
scope, arrival order kept.  ``on_start`` runs before the actor is reported ready; ``on_stop`` runs after an
orderly stop has served everything still queued.

**References, call and cast.**  Callers hold an :class:`ActorRef`:

* ``await ref.call(msg, timeout=5.0)`` sends and waits for the reply.  The one
  timeout covers waiting for mailbox space (backpressure) and waiting for the
  reply; on expiry :class:`CallTimeout` is raised.
* ``await ref.try_call(msg)`` is the same but raises :class:`Busy` at once when
  the mailbox is full.
* ``await ref.cast(msg)`` / ``ref.try_cast(msg)`` send without waiting for the
  handling; ``cast`` waits up to ``timeout`` for space, ``try_cast`` never waits.
* ``ref.stats()`` returns :class:`MailboxStats`; ``ref.running`` tells whether an
  instance is serving the mailbox.

Memory is bounded by the mailbox ``capacity``: a full mailbox makes senders
wait (``call``/``cast``) or fail fast (``try_call``/``try_cast``).

**Cancellation crosses the actor boundary.**  Every request is handled inside
its own ``trio.CancelScope``.  If a caller times out or is cancelled, that scope
is cancelled, so the callee's work for *that* request stops at its next
checkpoint (or never starts if it was still queued); other requests are not
affected.

**Crashes.**  An exception escaping ``handle`` (or ``on_start``) crashes the
instance: in-flight requests get :class:`ActorCrashed` (carrying only the
exception's class name), queued messages stay in the mailbox.  Under
:func:`spawn` (no supervision) the original exception propagates and callers
still queued get :class:`ActorStopped`.

**Supervision.**  A :class:`Supervisor` runs an ordered list of
:class:`ChildSpec` (build them with :func:`actor_child`, :func:`supervisor_child`
or by hand) with the one_for_one strategy: children start in order, each ready
before the next; an exited child is restarted per its :class:`Restart` type
(PERMANENT always, TRANSIENT after an exception, TEMPORARY never) as long as at
most ``max_restarts`` restarts happen within ``period`` seconds.  Beyond that
the supervisor stops the remaining children in reverse order and raises
:class:`SupervisorEscalation` (``__cause__`` = the child's exception), which a
parent supervisor treats as a crash of that child.  An actor child's mailbox
belongs to its slot, so its :class:`ActorRef` stays valid across restarts and
the restarted instance serves what was queued.

**Stopping.**  ``await supervisor.stop()`` stops children in reverse order.  An
actor child stops in an orderly way: its mailbox refuses new messages
(:class:`ActorStopped`), in-flight and queued messages are served, ``on_stop``
runs, all within ``shutdown_timeout``; after that deadline it is cancelled.
Cancelling the scope around ``Supervisor.run`` cancels everything at once.
Once an actor will not be served again, queued and future callers get
:class:`ActorStopped`.

**Containment.**  ``contained(spec)`` runs a child under its own one-child supervisor:
past that supervisor's intensity the child is *down* (its callers get
:class:`ActorStopped`, nothing escalates) and it is started again after a
:class:`Backoff` delay. Restart intensity is then a measure of one subsystem's faults,
never a fuse for the whole tree. ``ChildStats.contained`` (a :class:`ContainedStatus`)
says whether it is up, how often it went down and when it is retried.

**Refs before the tree runs.**  ``ref_of(spec)`` gives an actor child's ref (also through
:func:`contained`) as soon as the spec exists, so a composition root can wire every caller
before anything starts.

**Dynamic children.**  ``await supervisor.start_child(spec)`` adds a child to a
running supervisor (after the static ones, so it is stopped first) and returns
its started value; ``await supervisor.terminate_child(id)`` stops one child in
an orderly way and forgets it (no restart).  The gateway runs published tools
this way.

**Errors.**  All runtime errors derive from :class:`ActorError`; exception
groups never escape the runtime (see ``actors._errors`` for the hierarchy).
"""

from ._actor import NOT_NOW as NOT_NOW
from ._actor import Actor as Actor
from ._actor import NotNow as NotNow
from ._actor import spawn as spawn
from ._contained import Backoff as Backoff
from ._contained import contained as contained
from ._errors import ActorCrashed as ActorCrashed
from ._errors import ActorError as ActorError
from ._errors import ActorStopped as ActorStopped
from ._errors import Busy as Busy
from ._errors import CallTimeout as CallTimeout
from ._errors import SupervisorEscalation as SupervisorEscalation
from ._mailbox import ActorRef as ActorRef
from ._mailbox import MailboxStats as MailboxStats
from ._supervisor import ChildSpec as ChildSpec
from ._supervisor import ChildStats as ChildStats
from ._supervisor import ContainedStatus as ContainedStatus
from ._supervisor import Restart as Restart
from ._supervisor import Supervisor as Supervisor
from ._supervisor import SupervisorStats as SupervisorStats
from ._supervisor import actor_child as actor_child
from ._supervisor import ref_of as ref_of
from ._supervisor import supervisor_child as supervisor_child

__all__ = [
    "NOT_NOW",
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorStopped",
    "Backoff",
    "Busy",
    "CallTimeout",
    "ChildSpec",
    "ChildStats",
    "ContainedStatus",
    "MailboxStats",
    "NotNow",
    "Restart",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorStats",
    "actor_child",
    "contained",
    "ref_of",
    "spawn",
    "supervisor_child",
]
