"""ActorRef and spawn: call/cast, crashes, timeouts, cancellation, backpressure, stats."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from actors import Actor, ActorCrashed, ActorRef, ActorStopped, Busy, CallTimeout, spawn


class Probe:
    """Shared, test-visible record of what actor instances did."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.handled: list[Any] = []
        self.cancelled: list[Any] = []
        self.release = trio.Event()


class Worker(Actor[Any, Any]):
    """("echo", x) -> x; ("block", x) waits for probe.release; ("sleep", s) sleeps; ("boom", x) crashes."""

    def __init__(self, probe: Probe) -> None:
        super().__init__("worker")
        self.probe = probe

    async def handle(self, msg: Any) -> Any:
        kind, arg = msg
        self.probe.started.append(arg)
        try:
            if kind == "block":
                await self.probe.release.wait()
            elif kind == "sleep":
                await trio.sleep(arg)
            elif kind == "boom":
                raise ValueError("secret internal detail")
        except trio.Cancelled:
            self.probe.cancelled.append(arg)
            raise
        self.probe.handled.append(arg)
        return arg


class ParallelWorker(Worker):
    max_concurrency = 3


async def start_worker(
    nursery: trio.Nursery, probe: Probe, capacity: int = 8, cls: type[Worker] = Worker
) -> ActorRef[Any, Any]:
    ref: ActorRef[Any, Any] = await nursery.start(spawn, lambda: cls(probe), capacity)
    return ref


async def call_and_record(ref: ActorRef[Any, Any], msg: Any, results: dict[Any, Any]) -> None:
    try:
        results[msg] = await ref.call(msg, timeout=60)
    except Exception as exc:
        results[msg] = exc


async def test_call_returns_the_reply_and_casts_are_handled_in_order() -> None:
    probe = Probe()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe)
            assert (ref.name, ref.running) == ("worker", True)
            await ref.cast(("echo", 1))
            ref.try_cast(("echo", 2))
            assert await ref.call(("echo", 3)) == 3
            assert await ref.try_call(("echo", 4)) == 4
            assert probe.handled == [1, 2, 3, 4]
            nursery.cancel_scope.cancel()
    assert not ref.running


async def test_on_start_runs_before_the_ref_is_handed_out() -> None:
    order: list[str] = []

    class Starter(Actor[str, str]):
        async def on_start(self) -> None:
            await trio.lowlevel.checkpoint()
            order.append("on_start")

        async def handle(self, msg: str) -> str:
            return msg

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(spawn, Starter)
            order.append("ready")
            assert ref.name == "Starter"
            nursery.cancel_scope.cancel()
    assert order == ["on_start", "ready"]


async def test_on_start_failure_fails_the_start_with_the_original_exception() -> None:
    class FailsToStart(Actor[str, str]):
        async def on_start(self) -> None:
            raise OSError("no socket")

        async def handle(self, msg: str) -> str:
            return msg

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(OSError, match="no socket"):
                await nursery.start(spawn, FailsToStart)


async def test_crash_fails_the_in_flight_call_and_spawn_reraises_the_original() -> None:
    probe = Probe()
    raised: list[BaseException] = []
    results: dict[Any, Any] = {}

    async def run_spawn(*, task_status: trio.TaskStatus[ActorRef[Any, Any]]) -> None:
        try:
            await spawn(lambda: Worker(probe), task_status=task_status)
        except BaseException as exc:  # what spawn itself raises, before any nursery wraps it
            raised.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ref: ActorRef[Any, Any] = await nursery.start(run_spawn)
            ref.try_cast(("block", "first"))
            for msg in [("boom", "b"), ("echo", "queued")]:
                nursery.start_soon(call_and_record, ref, msg, results)
                await trio.testing.wait_all_tasks_blocked()
            probe.release.set()

    assert len(raised) == 1
    assert type(raised[0]) is ValueError  # the original exception, not a group
    crashed = results[("boom", "b")]
    assert isinstance(crashed, ActorCrashed)
    assert (crashed.actor, crashed.cause_type) == ("worker", "ValueError")
    assert "secret" not in str(crashed)
    assert isinstance(results[("echo", "queued")], ActorStopped)
    with pytest.raises(ActorStopped):
        await ref.call(("echo", "late"))
    with pytest.raises(ActorStopped):
        ref.try_cast(("echo", "late"))
    assert ref.stats().crashes == 1


async def test_call_timeout_cancels_the_callee_work_for_that_request(autojump_clock: Any) -> None:
    probe = Probe()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe)
            began = trio.current_time()
            with pytest.raises(CallTimeout) as info:
                await ref.call(("sleep", 100), timeout=2)
            assert trio.current_time() - began == pytest.approx(2)
            assert (info.value.actor, info.value.timeout) == ("worker", 2)
            assert isinstance(info.value, TimeoutError)
            assert await ref.call(("echo", "next")) == "next"  # the actor survived
            assert probe.cancelled == [100]
            assert ref.stats().crashes == 0
            nursery.cancel_scope.cancel()


async def test_caller_cancellation_crosses_the_actor_boundary() -> None:
    probe = Probe()

    async def cancellable_caller(
        ref: ActorRef[Any, Any], *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await ref.call(("block", "abandoned"))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe)
            scope = await nursery.start(cancellable_caller, ref)
            await trio.testing.wait_all_tasks_blocked()
            assert probe.started == ["abandoned"]
            scope.cancel()
            assert await ref.call(("echo", "next")) == "next"
            assert probe.cancelled == ["abandoned"]
            assert ref.stats().in_flight == 0
            nursery.cancel_scope.cancel()


async def test_a_request_abandoned_while_queued_is_never_handled(autojump_clock: Any) -> None:
    probe = Probe()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe)
            ref.try_cast(("block", "busy"))
            with pytest.raises(CallTimeout):
                await ref.call(("echo", "gave-up"), timeout=1)
            probe.release.set()
            assert await ref.call(("echo", "next")) == "next"
            assert probe.started == ["busy", "next"]
            nursery.cancel_scope.cancel()


async def test_backpressure_full_mailbox_waits_then_times_out_or_is_busy(autojump_clock: Any) -> None:
    probe = Probe()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe, capacity=2)
            ref.try_cast(("block", "busy"))
            await trio.testing.wait_all_tasks_blocked()  # the actor holds "busy"; mailbox empty
            ref.try_cast(("echo", 1))
            ref.try_cast(("echo", 2))
            assert ref.stats().queued == 2

            with pytest.raises(Busy) as busy:
                ref.try_cast(("echo", "x"))
            assert (busy.value.actor, busy.value.capacity) == ("worker", 2)
            with pytest.raises(Busy):
                await ref.try_call(("echo", "x"))
            began = trio.current_time()
            with pytest.raises(CallTimeout):
                await ref.call(("echo", "x"), timeout=3)
            assert trio.current_time() - began == pytest.approx(3)
            with pytest.raises(CallTimeout):
                await ref.cast(("echo", "x"), timeout=1)

            for i in range(1000):  # memory stays bounded: nothing beyond capacity is kept
                with pytest.raises(Busy):
                    ref.try_cast(("echo", i))
            assert ref.stats().queued == 2
            nursery.cancel_scope.cancel()
    assert probe.started == ["busy"]


async def test_a_waiting_call_proceeds_once_space_frees_up(autojump_clock: Any) -> None:
    probe = Probe()
    results: dict[Any, Any] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe, capacity=1)
            ref.try_cast(("block", "busy"))
            await trio.testing.wait_all_tasks_blocked()
            ref.try_cast(("echo", 1))
            nursery.start_soon(call_and_record, ref, ("echo", "waiter"), results)
            await trio.sleep(10)
            assert results == {}
            probe.release.set()
            await trio.sleep(1)
            assert results == {("echo", "waiter"): "waiter"}
            assert probe.handled == ["busy", 1, "waiter"]
            nursery.cancel_scope.cancel()


async def test_stats_count_queued_in_flight_and_processed() -> None:
    probe = Probe()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe, capacity=4)
            await ref.call(("echo", 1))
            ref.try_cast(("block", 2))
            ref.try_cast(("echo", 3))
            await trio.testing.wait_all_tasks_blocked()
            stats = ref.stats()
            assert (stats.name, stats.capacity) == ("worker", 4)
            assert (stats.queued, stats.in_flight, stats.processed) == (1, 1, 1)
            assert (stats.crashes, stats.restarts) == (0, 0)
            probe.release.set()
            await ref.call(("echo", 4))
            stats = ref.stats()
            assert (stats.queued, stats.in_flight, stats.processed) == (0, 0, 4)
            nursery.cancel_scope.cancel()


async def test_max_concurrency_handles_messages_in_parallel(autojump_clock: Any) -> None:
    probe = Probe()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe, cls=ParallelWorker)
            began = trio.current_time()
            async with trio.open_nursery() as callers:
                for _ in range(4):
                    callers.start_soon(ref.call, ("sleep", 1))
                await trio.testing.wait_all_tasks_blocked()
                assert (ref.stats().in_flight, ref.stats().queued) == (3, 1)
            assert trio.current_time() - began == pytest.approx(2)  # 3 in parallel, then 1
            assert ref.stats().processed == 4
            nursery.cancel_scope.cancel()


async def test_max_concurrency_cancels_only_the_abandoned_request() -> None:
    probe = Probe()
    results: dict[Any, Any] = {}

    async def cancellable_caller(
        ref: ActorRef[Any, Any], *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await ref.call(("block", "abandoned"))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ref = await start_worker(nursery, probe, cls=ParallelWorker)
            nursery.start_soon(call_and_record, ref, ("block", "kept"), results)
            scope = await nursery.start(cancellable_caller, ref)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert probe.cancelled == ["abandoned"]
            probe.release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert results == {("block", "kept"): "kept"}
            nursery.cancel_scope.cancel()


async def test_max_concurrency_crash_fails_every_in_flight_request() -> None:
    probe = Probe()
    results: dict[Any, Any] = {}
    raised: list[BaseException] = []

    async def run_spawn(*, task_status: trio.TaskStatus[ActorRef[Any, Any]]) -> None:
        try:
            await spawn(lambda: ParallelWorker(probe), task_status=task_status)
        except BaseException as exc:
            raised.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ref: ActorRef[Any, Any] = await nursery.start(run_spawn)
            for msg in [("block", "a"), ("block", "b"), ("boom", "c"), ("echo", "queued")]:
                nursery.start_soon(call_and_record, ref, msg, results)
                await trio.testing.wait_all_tasks_blocked()

    assert [type(exc) for exc in raised] == [ValueError]
    for msg in [("block", "a"), ("block", "b"), ("boom", "c")]:
        assert isinstance(results[msg], ActorCrashed)
        assert results[msg].cause_type == "ValueError"
    assert sorted(probe.cancelled) == ["a", "b"]
    assert isinstance(results[("echo", "queued")], ActorStopped)  # spawn: nobody restarts it
