"""``Actor.answer_now``: replies made in the serving loop, without a task per message."""

from __future__ import annotations

import functools
import itertools

import pytest
import trio
import trio.testing

from actors import NOT_NOW, Actor, ActorCrashed, CallTimeout, NotNow, Supervisor, actor_child, ref_of, spawn


class Mixed(Actor[tuple[str, int], str]):
    """``("now", n)`` is answered inline; ``("wait", n)`` goes to ``handle`` and waits for ``gate``."""

    def __init__(self, concurrency: int) -> None:
        super().__init__("mixed")
        self.max_concurrency = concurrency
        self.gate = trio.Event()
        self.inline: list[int] = []
        self.handled: list[int] = []
        self.handle_tasks: set[object] = set()
        self.asked: list[tuple[tuple[str, int], object]] = []  # every answer_now, with the task it ran in

    def answer_now(self, msg: tuple[str, int]) -> str | NotNow:
        self.asked.append((msg, trio.lowlevel.current_task()))
        kind, n = msg
        if kind == "boom":
            raise RuntimeError("bad decision")
        if kind != "now":
            return NOT_NOW
        self.inline.append(n)
        return f"now {n}"

    async def handle(self, msg: tuple[str, int]) -> str:
        self.handle_tasks.add(trio.lowlevel.current_task())
        await self.gate.wait()
        self.handled.append(msg[1])
        return f"handled {msg[1]}"


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_quick_messages_are_answered_inline_in_order(concurrency: int) -> None:
    actor = Mixed(concurrency)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 64)
        replies = [await ref.call(("now", n)) for n in range(5)]
        assert replies == [f"now {n}" for n in range(5)]
        assert actor.inline == [0, 1, 2, 3, 4] and actor.handled == []
        assert not actor.handle_tasks  # no handler ran for them
        assert ref.stats().processed == 5
        nursery.cancel_scope.cancel()


async def test_inline_answers_do_not_wait_for_busy_handlers() -> None:
    actor = Mixed(8)
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 64)

        async def slow() -> None:
            results.append(await ref.call(("wait", 1)))

        nursery.start_soon(slow)
        await trio.testing.wait_all_tasks_blocked()
        assert await ref.call(("now", 2)) == "now 2"  # answered while handle(1) still waits
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert results == ["handled 1"]
        nursery.cancel_scope.cancel()


async def test_an_abandoned_message_is_not_answered(autojump_clock: trio.testing.MockClock) -> None:
    actor = Mixed(1)  # serial: the "now" message queues behind the waiting one
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 64)
        nursery.start_soon(ref.call, ("wait", 1))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(CallTimeout):
            await ref.call(("now", 2), timeout=1.0)
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert actor.inline == []  # the caller had gone: never decided
        assert await ref.call(("now", 3)) == "now 3"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_crash_in_answer_now_crashes_the_instance(concurrency: int) -> None:
    actor = Mixed(concurrency)
    caught: list[BaseException] = []

    async def run() -> None:
        try:
            await spawn(lambda: actor, 64, task_status=status)
        except RuntimeError as exc:  # the original exception, never a group
            caught.append(exc)

    async with trio.open_nursery() as nursery:
        status_ref: list[object] = []

        class Status:
            def started(self, value: object = None) -> None:
                status_ref.append(value)

        status = Status()
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        ref = status_ref[0]
        with pytest.raises(ActorCrashed):
            await ref.call(("boom", 0))  # type: ignore[attr-defined]
    assert len(caught) == 1 and str(caught[0]) == "bad decision"


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_burst_of_inline_answers_still_lets_other_tasks_run(concurrency: int) -> None:
    """Queued envelopes are taken without a scheduler pass, but never more than BURST in a row."""
    import actors._actor as runtime

    actor = Mixed(concurrency)
    progress: list[int] = []
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 1024)
        replies: list[str] = []

        async def caller(n: int) -> None:
            replies.append(await ref.call(("now", n)))

        for n in range(3 * runtime.BURST):
            nursery.start_soon(caller, n)

        async def bystander() -> None:
            while len(replies) < 3 * runtime.BURST:
                progress.append(len(actor.inline))
                await trio.lowlevel.checkpoint()

        nursery.start_soon(bystander)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(actor.inline) == list(range(3 * runtime.BURST))
        # the bystander ran between bursts: it saw the actor part-way through the queue
        assert any(0 < seen < 3 * runtime.BURST for seen in progress)
        assert all(b - a <= 2 * runtime.BURST for a, b in itertools.pairwise(progress))  # once each side of a yield
        nursery.cancel_scope.cancel()


async def test_a_call_without_its_own_timeout_is_bounded_by_the_callers_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Mixed(1)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 64)
        assert await ref.call(("now", 1), timeout=None) == "now 1"
        nursery.start_soon(functools.partial(ref.call, ("wait", 2), timeout=100))
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(30) as scope:
            await ref.call(("now", 3), timeout=None)  # queued behind the waiting one
        assert scope.cancelled_caught
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert actor.inline == [1]  # the abandoned one was never answered
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_an_idle_actor_answers_in_the_callers_own_task(concurrency: int) -> None:
    actor = Mixed(concurrency)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 64)
        await trio.testing.wait_all_tasks_blocked()  # the instance waits for its first message
        assert await ref.call(("now", 1)) == "now 1"
        assert actor.asked == [(("now", 1), trio.lowlevel.current_task())]
        assert ref.stats().processed == 1
        nursery.cancel_scope.cancel()


async def test_a_message_on_its_way_keeps_its_place() -> None:
    actor = Mixed(1)  # serial: what arrives after "wait 1" is served after it
    replies: list[str] = []
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 64)
        await trio.testing.wait_all_tasks_blocked()
        ref.try_cast(("wait", 1))  # handed to the waiting instance, which has not run yet

        async def second() -> None:
            replies.append(await ref.call(("now", 2)))

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert replies == [] and actor.handled == []  # queued behind the cast, not answered past it
        actor.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert actor.handled == [1] and replies == ["now 2"]
        assert [task for msg, task in actor.asked if msg == ("now", 2)] != [trio.lowlevel.current_task()]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_message_declined_in_the_callers_task_is_not_asked_again(concurrency: int) -> None:
    actor = Mixed(concurrency)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(spawn, lambda: actor, 64)
        await trio.testing.wait_all_tasks_blocked()
        actor.gate.set()
        assert await ref.call(("wait", 7)) == "handled 7"
        assert [msg for msg, _ in actor.asked] == [("wait", 7)]  # once, by the caller's task
        nursery.cancel_scope.cancel()


async def test_a_crash_in_the_callers_task_restarts_the_instance_under_its_supervisor() -> None:
    instances: list[Mixed] = []

    def make() -> Mixed:
        instances.append(Mixed(8))
        return instances[-1]

    spec = actor_child("mixed", make)
    sup = Supervisor("sup", [spec])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            ref = ref_of(spec)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ActorCrashed):
                await ref.call(("boom", 0))  # raised in this task's answer_now
            assert instances[0].asked[-1][1] is trio.lowlevel.current_task()
            assert await ref.call(("now", 1)) == "now 1"  # queued, then served by the new instance
            await trio.testing.wait_all_tasks_blocked()
            assert len(instances) == 2 and (ref.stats().crashes, ref.stats().restarts) == (1, 1)
            assert instances[1].inline == [1]
            await sup.stop()
