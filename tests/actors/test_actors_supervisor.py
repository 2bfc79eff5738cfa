"""Supervisor: ordering, restarts, restart types, intensity, shutdown, nesting, stats."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorCrashed,
    ActorRef,
    ActorStopped,
    ChildSpec,
    Restart,
    Supervisor,
    SupervisorEscalation,
    actor_child,
    supervisor_child,
)


class World:
    """Shared, test-visible record of lifecycle events and handler behaviour."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.cancelled: list[Any] = []
        self.release = trio.Event()
        self.instances = itertools.count(1)


class Recorder(Actor[Any, Any]):
    """("echo", x) -> (instance, x); ("block", x) waits; ("sleep", s) sleeps; ("boom", x) crashes.

    ("sleep-boom", s) sleeps, then crashes.
    """

    def __init__(self, name: str, world: World) -> None:
        super().__init__(name)
        self.world = world
        self.instance = next(world.instances)

    async def on_start(self) -> None:
        self.world.log.append(("start", self.name))

    async def on_stop(self) -> None:
        self.world.log.append(("stop", self.name))

    async def handle(self, msg: Any) -> Any:
        kind, arg = msg
        try:
            if kind == "block":
                await self.world.release.wait()
            elif kind == "sleep":
                await trio.sleep(arg)
            elif kind == "boom":
                raise RuntimeError("internal detail")
            elif kind == "sleep-boom":
                await trio.sleep(arg)
                raise RuntimeError("internal detail")
        except trio.Cancelled:
            self.world.cancelled.append(arg)
            raise
        return (self.instance, arg)


class ParallelRecorder(Recorder):
    max_concurrency = 2


def recorder(name: str, world: World, **options: Any) -> ChildSpec:
    return actor_child(name, lambda: Recorder(name, world), **options)


async def run_capturing(
    sup: Supervisor, errors: list[BaseException], *, task_status: trio.TaskStatus[Supervisor]
) -> None:
    try:
        await sup.run(task_status=task_status)
    except SupervisorEscalation as exc:
        errors.append(exc)


def ref_of(sup: Supervisor, child_id: str) -> ActorRef[Any, Any]:
    ref = sup.get(child_id)
    assert isinstance(ref, ActorRef)
    return ref


async def call_and_record(ref: ActorRef[Any, Any], msg: Any, results: dict[Any, Any]) -> None:
    try:
        results[msg] = await ref.call(msg, timeout=60)
    except Exception as exc:
        results[msg] = exc


async def crash(ref: ActorRef[Any, Any]) -> None:
    with pytest.raises(ActorCrashed):
        await ref.call(("boom", None))
    await trio.testing.wait_all_tasks_blocked()  # let the supervisor react


class Scripted:
    """A plain start callable: each incarnation reports its number, then ends on `finish`."""

    def __init__(self) -> None:
        self.incarnations = 0
        self.cancelled = 0
        self._end = trio.Event()
        self._fail = False

    async def __call__(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.incarnations += 1
        task_status.started(self.incarnations)
        try:
            await self._end.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self._end = trio.Event()
        if self._fail:
            raise KeyError("scripted failure")

    async def finish(self, *, fail: bool) -> None:
        self._fail = fail
        self._end.set()
        await trio.testing.wait_all_tasks_blocked()


async def test_children_start_in_order_and_stop_in_reverse_order() -> None:
    world = World()
    sup = Supervisor("sup", [recorder(name, world) for name in "abc"])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(sup.run) is sup
            assert world.log == [("start", "a"), ("start", "b"), ("start", "c")]
            ref = ref_of(sup, "b")
            assert ref.name == "b"
            assert await ref.call(("echo", 1)) == (2, 1)
            stats = sup.stats()
            assert stats.running
            assert [(c.id, c.running, c.restarts) for c in stats.children] == [
                ("a", True, 0),
                ("b", True, 0),
                ("c", True, 0),
            ]
            assert stats.children[1].mailbox is not None
            assert stats.children[1].mailbox.processed == 1
            await sup.stop()
    assert world.log[3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert not sup.stats().running
    assert not any(child.running for child in sup.stats().children)
    with pytest.raises(ActorStopped):
        await ref.call(("echo", 2))


async def test_get_and_stop_outside_a_run() -> None:
    sup = Supervisor("sup", [recorder("a", World())])
    with pytest.raises(KeyError):
        sup.get("a")  # not started yet
    with pytest.raises(KeyError):
        sup.get("nope")
    with trio.fail_after(1):
        await sup.stop()  # not running: nothing to do


async def test_crash_fails_the_in_flight_caller_and_the_same_ref_works_after_restart() -> None:
    world = World()
    sup = Supervisor("sup", [recorder("w", world)])
    results: dict[Any, Any] = {}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "w")
            assert await ref.call(("echo", "first")) == (1, "first")
            ref.try_cast(("block", "hold"))
            for msg in [("boom", "crash"), ("echo", "queued")]:
                nursery.start_soon(call_and_record, ref, msg, results)
                await trio.testing.wait_all_tasks_blocked()
            world.release.set()
            await trio.testing.wait_all_tasks_blocked()

            assert isinstance(results[("boom", "crash")], ActorCrashed)
            assert results[("echo", "queued")] == (2, "queued")  # served by the restarted instance
            assert sup.get("w") is ref
            assert await ref.call(("echo", "later")) == (2, "later")
            assert ref.running
            stats = ref.stats()
            assert (stats.crashes, stats.restarts) == (1, 1)
            assert sup.stats().children[0].restarts == 1
            await sup.stop()


async def test_restart_intensity_exceeded_escalates_and_stops_siblings_in_reverse() -> None:
    world = World()
    sup = Supervisor("sup", [recorder(name, world) for name in "abcd"], max_restarts=2, period=5)
    errors: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_capturing, sup, errors)
            refs = {name: ref_of(sup, name) for name in "abcd"}
            for _ in range(3):
                await crash(refs["b"])
    assert len(errors) == 1
    escalation = errors[0]
    assert isinstance(escalation, SupervisorEscalation)
    assert (escalation.supervisor, escalation.child) == ("sup", "b")
    assert isinstance(escalation.__cause__, RuntimeError)
    stops = [event for event in world.log if event[0] == "stop"]
    assert stops == [("stop", "d"), ("stop", "c"), ("stop", "a")]
    assert world.log.count(("start", "b")) == 3  # first start + 2 restarts
    for ref in refs.values():
        with pytest.raises(ActorStopped):
            await ref.call(("echo", None))


async def test_restarts_spread_over_more_than_the_period_are_allowed(autojump_clock: Any) -> None:
    world = World()
    sup = Supervisor("sup", [recorder("w", world)], max_restarts=1, period=5)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "w")
            for _ in range(3):
                await crash(ref)
                await trio.sleep(6)
            assert ref.stats().restarts == 3
            assert await ref.call(("echo", "alive")) == (4, "alive")
            await sup.stop()


async def test_permanent_child_is_restarted_after_a_normal_exit() -> None:
    child = Scripted()
    sup = Supervisor("sup", [ChildSpec("p", child, restart=Restart.PERMANENT)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert sup.get("p") == 1
            await child.finish(fail=False)
            assert sup.get("p") == 2
            await child.finish(fail=True)
            assert sup.get("p") == 3
            await sup.stop()


async def test_transient_child_is_restarted_only_after_an_exception() -> None:
    child = Scripted()
    sup = Supervisor("sup", [ChildSpec("t", child, restart=Restart.TRANSIENT)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await child.finish(fail=True)
            assert sup.get("t") == 2
            await child.finish(fail=False)
            with pytest.raises(KeyError):
                sup.get("t")
            assert child.incarnations == 2
            assert sup.stats().children[0].running is False
            await sup.stop()


async def test_temporary_child_is_never_restarted() -> None:
    child = Scripted()
    sup = Supervisor("sup", [ChildSpec("t", child, restart=Restart.TEMPORARY)], max_restarts=0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await child.finish(fail=True)  # no escalation: nothing is restarted
            with pytest.raises(KeyError):
                sup.get("t")
            assert child.incarnations == 1
            await sup.stop()


async def test_temporary_actor_child_leaves_its_callers_with_actor_stopped() -> None:
    world = World()
    sup = Supervisor("sup", [recorder("t", world, restart=Restart.TEMPORARY)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "t")
            await crash(ref)
            with pytest.raises(ActorStopped):
                await ref.call(("echo", None))
            await sup.stop()


async def test_orderly_stop_finishes_in_flight_and_queued_work_within_the_timeout(
    autojump_clock: Any,
) -> None:
    world = World()
    sup = Supervisor("sup", [recorder("w", world, shutdown_timeout=10)])
    results: dict[Any, Any] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "w")
            for msg in [("sleep", 3), ("echo", "queued")]:
                nursery.start_soon(call_and_record, ref, msg, results)
                await trio.testing.wait_all_tasks_blocked()
            began = trio.current_time()
            nursery.start_soon(sup.stop)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorStopped):
                ref.try_cast(("echo", "too late"))
            await sup.stop()
            assert trio.current_time() - began == pytest.approx(3)
    assert results == {("sleep", 3): (1, 3), ("echo", "queued"): (1, "queued")}
    assert world.log[-1] == ("stop", "w")


async def test_orderly_stop_cancels_work_that_outlives_the_timeout(autojump_clock: Any) -> None:
    world = World()
    sup = Supervisor("sup", [recorder("w", world, shutdown_timeout=2)])
    results: dict[Any, Any] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "w")
            for msg in [("sleep", 100), ("echo", "queued")]:
                nursery.start_soon(call_and_record, ref, msg, results)
                await trio.testing.wait_all_tasks_blocked()
            began = trio.current_time()
            await sup.stop()
            assert trio.current_time() - began == pytest.approx(2)
    assert world.cancelled == [100]
    assert isinstance(results[("sleep", 100)], ActorStopped)
    assert isinstance(results[("echo", "queued")], ActorStopped)
    assert ("stop", "w") not in world.log  # on_stop is for orderly stops only


async def test_plain_children_are_cancelled_at_once_on_stop(autojump_clock: Any) -> None:
    child = Scripted()
    sup = Supervisor("sup", [ChildSpec("plain", child, shutdown_timeout=30)])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            began = trio.current_time()
            await sup.stop()
            assert trio.current_time() == began
    assert child.cancelled == 1


async def test_cancelling_the_enclosing_scope_stops_everything() -> None:
    world = World()
    sup = Supervisor("sup", [recorder(name, world) for name in "ab"])
    results: dict[Any, Any] = {}
    with trio.fail_after(5):
        async with trio.open_nursery() as callers, trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "a")
            for msg in [("block", "held"), ("echo", "queued")]:
                callers.start_soon(call_and_record, ref, msg, results)
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert world.cancelled == ["held"]
    assert isinstance(results[("block", "held")], ActorStopped)
    assert isinstance(results[("echo", "queued")], ActorStopped)
    assert not sup.stats().running
    with pytest.raises(ActorStopped):
        ref.try_cast(("echo", None))


async def test_a_child_failing_to_start_stops_the_started_ones_and_escalates() -> None:
    world = World()

    class Broken(Recorder):
        async def on_start(self) -> None:
            raise OSError("port in use")

    sup = Supervisor("sup", [recorder("a", world), actor_child("bad", lambda: Broken("bad", world))])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(SupervisorEscalation) as info:
                await nursery.start(sup.run)
    assert info.value.child == "bad"
    assert isinstance(info.value.__cause__, OSError)
    assert world.log == [("start", "a"), ("stop", "a")]


async def test_parallel_actor_crash_fails_in_flight_only_and_queued_survive(autojump_clock: Any) -> None:
    world = World()
    sup = Supervisor("sup", [actor_child("p", lambda: ParallelRecorder("p", world))])
    results: dict[Any, Any] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "p")
            for msg in [("block", "held"), ("sleep-boom", 1), ("echo", "queued")]:
                nursery.start_soon(call_and_record, ref, msg, results)
                await trio.testing.wait_all_tasks_blocked()
            assert (ref.stats().in_flight, ref.stats().queued) == (2, 1)
            await trio.sleep(2)
            assert isinstance(results[("block", "held")], ActorCrashed)
            assert isinstance(results[("sleep-boom", 1)], ActorCrashed)
            assert world.cancelled == ["held"]
            assert results[("echo", "queued")] == (2, "queued")  # served by the restarted instance
            assert ref.stats().crashes == 1
            await sup.stop()


async def test_nested_supervisor_is_restarted_by_its_parent_then_escalates() -> None:
    world = World()
    inner = Supervisor("inner", [recorder("w", world)], max_restarts=0)
    outer = Supervisor("outer", [supervisor_child(inner), recorder("sibling", world)], max_restarts=1)
    errors: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_capturing, outer, errors)
            assert outer.get("inner") is inner
            ref = ref_of(inner, "w")
            await crash(ref)  # inner gives up at once; outer restarts the inner supervisor
            assert await ref.call(("echo", "same ref")) == (3, "same ref")  # 2 was "sibling"
            assert outer.stats().children[0].restarts == 1
            await crash(ref)  # second restart of inner within the period: outer gives up too
    assert len(errors) == 1
    escalation = errors[0]
    assert isinstance(escalation, SupervisorEscalation)
    assert (escalation.supervisor, escalation.child) == ("outer", "inner")
    inner_escalation = escalation.__cause__
    assert isinstance(inner_escalation, SupervisorEscalation)
    assert (inner_escalation.supervisor, inner_escalation.child) == ("inner", "w")
    assert isinstance(inner_escalation.__cause__, RuntimeError)
    assert world.log == [("start", "w"), ("start", "sibling"), ("start", "w"), ("stop", "sibling")]


async def test_stopping_the_parent_stops_a_nested_supervisor_gracefully() -> None:
    world = World()
    inner = Supervisor("inner", [recorder(name, world) for name in "ab"])
    outer = Supervisor("outer", [recorder("first", world), supervisor_child(inner), recorder("last", world)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            await outer.stop()
    assert [name for event, name in world.log if event == "start"] == ["first", "a", "b", "last"]
    assert [name for event, name in world.log if event == "stop"] == ["last", "b", "a", "first"]


async def test_a_child_whose_cancellation_cleanup_fails_does_not_break_stop() -> None:
    async def messy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def fails_on_cancel() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("cleanup failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fails_on_cancel)
            nursery.start_soon(trio.sleep_forever)
            task_status.started()

    sup = Supervisor("sup", [ChildSpec("messy", messy)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.stop()
    assert not sup.stats().running


async def test_failed_restarts_count_towards_the_intensity() -> None:
    world = World()

    class FragileRecorder(Recorder):
        async def on_start(self) -> None:
            if self.instance > 1:
                raise OSError("cannot come back")
            await super().on_start()

    sup = Supervisor("sup", [actor_child("w", lambda: FragileRecorder("w", world))], max_restarts=2)
    errors: list[BaseException] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_capturing, sup, errors)
            ref = ref_of(sup, "w")
            await crash(ref)
    assert len(errors) == 1
    assert isinstance(errors[0].__cause__, OSError)
    assert sup.stats().children[0].restarts == 2
    assert ref.stats().crashes == 3  # the handler crash, then two failed starts
    with pytest.raises(ActorStopped):
        ref.try_cast(("echo", None))


async def test_every_crash_is_logged_with_its_exception(caplog: pytest.LogCaptureFixture) -> None:
    """A restarted child used to vanish silently: the operator must see each crash."""
    world = World()
    sup = Supervisor("sup", [recorder("w", world)])
    with caplog.at_level("WARNING", logger="actors.supervisor"), trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(sup, "w")
            with pytest.raises(ActorCrashed):
                await ref.call(("boom", "x"))
            assert await ref.call(("echo", "after")) == (2, "after")
            await sup.stop()
    crashes = [r for r in caplog.records if r.name == "actors.supervisor"]
    assert len(crashes) == 1
    assert crashes[0].levelname == "ERROR"
    assert "child w of sup crashed" in crashes[0].getMessage() and "restarting" in crashes[0].getMessage()
    assert crashes[0].exc_info is not None and crashes[0].exc_info[1] is not None
