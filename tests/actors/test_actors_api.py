"""The public surface of actors/ and its error hierarchy."""

from __future__ import annotations

import pytest
import trio

import actors
from actors import (
    Actor,
    ActorCrashed,
    ActorError,
    ActorStopped,
    Busy,
    CallTimeout,
    ChildSpec,
    Restart,
    Supervisor,
    SupervisorEscalation,
    actor_child,
    spawn,
)

EXPECTED_PUBLIC_NAMES = {
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
    "NOT_NOW",
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
}


class Echo(Actor[str, str]):
    async def handle(self, msg: str) -> str:
        return msg


def test_public_surface_is_pinned() -> None:
    assert set(actors.__all__) == EXPECTED_PUBLIC_NAMES
    assert len(actors.__all__) == len(EXPECTED_PUBLIC_NAMES)
    for name in actors.__all__:
        assert getattr(actors, name).__module__.startswith("actors.")


def test_error_hierarchy() -> None:
    for cls in (Busy, CallTimeout, ActorCrashed, ActorStopped, SupervisorEscalation):
        assert issubclass(cls, ActorError)
    assert issubclass(CallTimeout, TimeoutError)
    busy = Busy("a", 3)
    assert (busy.actor, busy.capacity) == ("a", 3)
    timeout = CallTimeout("a", 1.5)
    assert (timeout.actor, timeout.timeout) == ("a", 1.5)
    assert ActorStopped("a").actor == "a"
    escalation = SupervisorEscalation("sup", "child")
    assert (escalation.supervisor, escalation.child) == ("sup", "child")


def test_actor_crashed_carries_the_type_name_only() -> None:
    crashed = ActorCrashed("a", "ValueError")
    assert crashed.cause_type == "ValueError"
    assert "ValueError" in str(crashed)


def test_actor_name_from_constructor_class_attribute_or_class_name() -> None:
    class Named(Echo):
        name = "named"

    assert Echo().name == "Echo"
    assert Named().name == "named"
    assert Echo("given").name == "given"


def test_supervisor_rejects_duplicate_child_ids() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor("sup", [actor_child("a", Echo), actor_child("a", Echo)])


def test_child_spec_defaults() -> None:
    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    spec = ChildSpec(id="x", start=start)
    assert spec.restart is Restart.PERMANENT
    assert spec.shutdown_timeout == 5.0


async def test_spawn_rejects_a_bad_capacity() -> None:
    with trio.fail_after(1), pytest.raises(ValueError, match="capacity"):
        await spawn(Echo, capacity=0)


async def test_spawn_rejects_a_bad_max_concurrency() -> None:
    class Bad(Echo):
        max_concurrency = 0

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            with pytest.raises(ValueError, match="max_concurrency"):
                await nursery.start(spawn, Bad)


async def test_ref_of_gives_a_childs_ref_before_it_runs_and_through_containment() -> None:
    plain = actors.actor_child("plain", Echo)
    wrapped = actors.contained(actors.actor_child("wrapped", Echo))
    refs = [actors.ref_of(plain), actors.ref_of(wrapped)]  # before any supervisor runs them
    with pytest.raises(TypeError):
        actors.ref_of(actors.ChildSpec("not-an-actor", actors.Supervisor("x", []).run))
    async with trio.open_nursery() as nursery:
        sup = actors.Supervisor("root", [plain, wrapped])
        await nursery.start(sup.run)
        assert [await ref.call("hi", timeout=5) for ref in refs] == ["hi", "hi"]
        assert sup.get("plain") is refs[0] and sup.get("wrapped") is refs[1]
        await sup.stop()
