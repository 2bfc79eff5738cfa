"""Containment: a crash storm takes down one child, never its parent; it is retried with backoff.

Every test runs on trio's virtual clock (``autojump_clock``): backoff delays pass in no time.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorCrashed,
    ActorRef,
    ActorStopped,
    Backoff,
    ChildSpec,
    ContainedStatus,
    Supervisor,
    SupervisorEscalation,
    actor_child,
    contained,
    supervisor_child,
)


class Flaky(Actor[Any, Any]):
    """("echo", x) -> x; ("boom", _) crashes the instance (as an internal fault would)."""

    async def handle(self, msg: Any) -> Any:
        kind, arg = msg
        if kind == "boom":
            raise RuntimeError("internal fault")
        return arg


def flaky(name: str, **options: Any) -> ChildSpec:
    return actor_child(name, lambda: Flaky(name), **options)


async def crash_storm(ref: ActorRef[Any, Any], crashes: int) -> None:
    for _ in range(crashes):
        try:
            await ref.call(("boom", None))
        except (ActorCrashed, ActorStopped):
            pass
        await trio.testing.wait_all_tasks_blocked()  # let the supervisors react


def status_of(sup: Supervisor, child_id: str) -> ContainedStatus:
    child = next(c for c in sup.stats().children if c.id == child_id)
    assert child.contained is not None
    return child.contained


def test_backoff_delays_grow_and_are_capped() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, maximum=10.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(10_000) == 10.0  # no overflow, however long the streak
    for bad in ({"initial": 0}, {"initial": 2, "maximum": 1}, {"factor": 0.5}, {"maximum": float("inf")}):
        with pytest.raises(ValueError):
            Backoff(**bad)


async def test_a_crash_storm_downs_only_that_child_and_it_comes_back_after_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The parent would escalate at its first restart: containment must never let it see one.
    parent = Supervisor("root", [contained(flaky("store"), max_restarts=2, period=10, backoff=Backoff(initial=5)),
                                 flaky("sibling")], max_restarts=0, period=30)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(parent.run)
            ref = parent.get("store")
            assert isinstance(ref, ActorRef)
            assert await ref.call(("echo", 1)) == 1
            assert status_of(parent, "store") == ContainedStatus(id="store", up=True)

            await crash_storm(ref, 3)  # the third crash is past the inner intensity (2 in 10 s)
            down = status_of(parent, "store")
            assert (down.up, down.outages, down.last_error) == (False, 1, "RuntimeError")
            assert down.retry_at == pytest.approx(trio.current_time() + 5)
            child = next(c for c in parent.stats().children if c.id == "store")
            assert not child.running and child.mailbox is not None
            with pytest.raises(ActorStopped):  # callers learn at once: no waiting for a dead actor
                await ref.call(("echo", 2))
            sibling = parent.get("sibling")
            assert isinstance(sibling, ActorRef) and await sibling.call(("echo", "fine")) == "fine"

            await trio.sleep_until(down.retry_at)
            await trio.testing.wait_all_tasks_blocked()
            assert await ref.call(("echo", 3)) == 3  # the same ref, served again
            assert status_of(parent, "store").up and parent.stats().running
            await parent.stop()


async def test_outages_in_a_row_back_off_longer_and_a_stable_run_resets_the_streak(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backoff = Backoff(initial=1, factor=2, maximum=8)
    parent = Supervisor("root", [contained(flaky("s"), max_restarts=0, period=10, backoff=backoff)])
    waits = []
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(parent.run)
            ref = parent.get("s")
            assert isinstance(ref, ActorRef)
            for _ in range(5):
                await crash_storm(ref, 1)  # max_restarts=0: one crash is an outage
                status = status_of(parent, "s")
                assert status.retry_at is not None
                waits.append(status.retry_at - trio.current_time())
                await trio.sleep_until(status.retry_at)
                await trio.testing.wait_all_tasks_blocked()
            assert waits == [1, 2, 4, 8, 8]
            await trio.sleep(backoff.maximum)  # up for `maximum`: the streak is over
            await crash_storm(ref, 1)
            status = status_of(parent, "s")
            assert status.outages == 6 and status.retry_at == pytest.approx(trio.current_time() + 1)
            await parent.stop()


async def test_a_child_that_cannot_start_again_stays_down_and_keeps_being_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    healthy = trio.Event()
    healthy.set()

    class NeedsDb(Flaky):
        async def on_start(self) -> None:
            if not healthy.is_set():
                raise OSError("database is down")

    spec = actor_child("db", lambda: NeedsDb("db"))
    parent = Supervisor("root", [contained(spec, max_restarts=1, period=10, backoff=Backoff(initial=2, maximum=4))])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(parent.run)
            ref = parent.get("db")
            assert isinstance(ref, ActorRef)
            healthy = trio.Event()  # from now on every start fails
            await crash_storm(ref, 1)
            first = status_of(parent, "db")
            assert not first.up and first.last_error == "OSError"
            assert first.retry_at is not None
            await trio.sleep_until(first.retry_at)
            await trio.testing.wait_all_tasks_blocked()
            second = status_of(parent, "db")
            assert not second.up and second.outages == 2 and parent.stats().running
            healthy.set()
            assert second.retry_at is not None
            await trio.sleep_until(second.retry_at)
            await trio.testing.wait_all_tasks_blocked()
            assert status_of(parent, "db").up and await ref.call(("echo", "back")) == "back"
            await parent.stop()


async def test_the_first_start_is_not_contained() -> None:
    class Broken(Flaky):
        async def on_start(self) -> None:
            raise OSError("cannot open")

    parent = Supervisor("root", [contained(actor_child("b", lambda: Broken("b")))])
    with trio.fail_after(5), pytest.raises(SupervisorEscalation) as caught:
        await parent.run()
    assert caught.value.child == "b"


async def test_stopping_a_down_child_does_not_wait_for_its_backoff(autojump_clock: trio.testing.MockClock) -> None:
    parent = Supervisor("root", [contained(flaky("s"), max_restarts=0, backoff=Backoff(initial=1000, maximum=1000))])
    async with trio.open_nursery() as nursery:
        await nursery.start(parent.run)
        ref = parent.get("s")
        assert isinstance(ref, ActorRef)
        await crash_storm(ref, 1)
        assert not status_of(parent, "s").up
        began = trio.current_time()
        await parent.stop()
        assert trio.current_time() - began < 1


async def test_a_contained_dynamic_child_and_a_contained_supervisor(autojump_clock: trio.testing.MockClock) -> None:
    tools = Supervisor("tools", [], max_restarts=0)
    inner = Supervisor("group", [flaky("a"), flaky("b")], max_restarts=0)
    root = Supervisor("root", [contained(supervisor_child(tools)),
                               contained(supervisor_child(inner), max_restarts=0)], max_restarts=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert root.get("group") is inner  # a contained supervisor reports itself, as it would uncontained
        ref = await tools.start_child(contained(flaky("tool:x"), max_restarts=0))
        assert isinstance(ref, ActorRef) and await ref.call(("echo", "x")) == "x"
        await crash_storm(ref, 1)
        assert not status_of(tools, "tool:x").up and root.stats().running
        await tools.terminate_child("tool:x")
        assert [c.id for c in tools.stats().children] == []
        b = inner.get("b")
        assert isinstance(b, ActorRef)
        await crash_storm(b, 1)  # the group gives up: only it goes down
        assert not status_of(root, "group").up and status_of(root, "tools").up
        await root.stop()
