"""Dynamic children: added to and removed from a running supervisor."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import Actor, ActorRef, ActorStopped, ChildSpec, Supervisor, actor_child


class Echo(Actor[Any, Any]):
    def __init__(self, log: list[str], name: str) -> None:
        super().__init__(name)
        self.log = log

    async def on_start(self) -> None:
        self.log.append(f"start {self.name}")

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}")

    async def handle(self, msg: Any) -> Any:
        if msg == "boom":
            raise RuntimeError("boom")
        return (self.name, msg)


async def test_start_child_runs_supervised_and_stops_first(autojump_clock: Any) -> None:
    log: list[str] = []
    sup = Supervisor("s", [actor_child("a", lambda: Echo(log, "a"))], max_restarts=3, period=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref: Any = await sup.start_child(actor_child("b", lambda: Echo(log, "b")))
        assert isinstance(ref, ActorRef)
        with trio.fail_after(1):
            assert await ref.call("hi") == ("b", "hi")
            with pytest.raises(Exception, match="crashed"):
                await ref.call("boom")
            assert await ref.call("again") == ("b", "again")  # restarted under the supervisor
        assert sup.get("b") is ref
        await sup.stop()
    assert log[-2:] == ["stop b", "stop a"]


async def test_terminate_child_is_orderly_and_not_restarted(autojump_clock: Any) -> None:
    log: list[str] = []
    sup = Supervisor("s", [], max_restarts=3, period=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref: Any = await sup.start_child(actor_child("b", lambda: Echo(log, "b")))
        await sup.terminate_child("b")
        assert log == ["start b", "stop b"]
        with pytest.raises(KeyError):
            sup.get("b")
        with trio.fail_after(1), pytest.raises(ActorStopped):
            await ref.call("x")
        assert [c.id for c in sup.stats().children] == []
        # the id can be reused, e.g. for a new version of a published tool
        ref2: Any = await sup.start_child(actor_child("b", lambda: Echo(log, "b")))
        with trio.fail_after(1):
            assert await ref2.call("y") == ("b", "y")
        nursery.cancel_scope.cancel()


async def test_start_failure_is_raised_and_not_kept(autojump_clock: Any) -> None:
    async def bad_start(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raise ValueError("cannot start")

    sup = Supervisor("s", [], max_restarts=3, period=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(ValueError, match="cannot start"):
            await sup.start_child(ChildSpec("bad", bad_start))
        with pytest.raises(ValueError, match="already has"):
            await sup.start_child(actor_child("x", lambda: Echo([], "x")))
            await sup.start_child(actor_child("x", lambda: Echo([], "x")))
        nursery.cancel_scope.cancel()


async def test_start_child_on_a_stopped_supervisor_is_refused() -> None:
    sup = Supervisor("s", [])
    with pytest.raises(ActorStopped):
        await sup.start_child(actor_child("x", lambda: Echo([], "x")))
