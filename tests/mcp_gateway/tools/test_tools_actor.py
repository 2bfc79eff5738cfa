"""ToolActor: Invoke round trips, errors as results, crashes, and restart under supervision."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from pydantic import BaseModel

import actors
from northstar.common.errors import NotFound, ToolFailed, UnknownTool, ValidationFailed
from northstar.mcp_gateway.tools.actor import Invoke, InvokeResult, ToolActor, tool_child, tool_factory
from northstar.mcp_gateway.tools.echo import ECHO, PingInput, PingOutput
from northstar.mcp_gateway.tools.model import Operation, Scope, ToolContext, ToolDefinition
from tests.mcp_gateway.tools.tools_testkit import tool_ctx

TIMEOUT = 5.0


class Empty(BaseModel):
    pass


class Count(BaseModel):
    n: int


class Boom(RuntimeError):
    pass


def make_test_tool() -> tuple[ToolDefinition, dict[str, Any]]:
    """A tool whose operations misbehave on purpose; ``state`` lets tests observe and steer them."""
    state: dict[str, Any] = {"calls": 0, "waiting": 0, "release": trio.Event()}

    async def ok(tctx: ToolContext, inputs: Empty) -> Count:
        state["calls"] += 1
        return Count(n=state["calls"])

    async def missing(tctx: ToolContext, inputs: Empty) -> Count:
        raise NotFound("no such thing", thing="x")

    async def boom(tctx: ToolContext, inputs: Empty) -> Count:
        raise Boom("a bug")

    async def as_dict(tctx: ToolContext, inputs: Empty) -> Any:
        return {"n": 7}

    async def bad_output(tctx: ToolContext, inputs: Empty) -> Any:
        return {"n": "not a number"}

    async def wait(tctx: ToolContext, inputs: Empty) -> Count:
        state["waiting"] += 1
        await state["release"].wait()
        return Count(n=state["waiting"])

    ops = tuple(
        Operation(name, name, Empty, Count, handler)
        for name, handler in [("ok", ok), ("missing", missing), ("boom", boom), ("as_dict", as_dict),
                              ("bad_output", bad_output), ("wait", wait)]
    )
    return ToolDefinition("testtool", "Test", "misbehaves", "0.0.1", (Scope("test", "t", ops),)), state


def invoke(operation: str, arguments: BaseModel | None = None) -> Invoke:
    return Invoke(tctx=tool_ctx(), operation=operation, arguments=arguments or Empty())


async def test_echo_round_trip_through_spawn() -> None:
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, tool_factory(ECHO))
        assert ref.name == "tool:echo"
        result = await ref.call(invoke("ping", PingInput(message="hi", data={"a": 1})), timeout=TIMEOUT)
        assert isinstance(result, InvokeResult) and result.ok
        out = result.unwrap()
        assert isinstance(out, PingOutput)
        assert (out.message, out.data) == ("hi", {"a": 1})
        nursery.cancel_scope.cancel()


async def test_refusals_are_results() -> None:
    tool, _ = make_test_tool()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, tool_factory(tool))
        unknown = await ref.call(invoke("nope"), timeout=TIMEOUT)
        assert isinstance(unknown.error, UnknownTool) and unknown.output is None
        wrong_model = await ref.call(invoke("ok", PingInput()), timeout=TIMEOUT)
        assert isinstance(wrong_model.error, ValidationFailed)
        with pytest.raises(ValidationFailed):
            wrong_model.unwrap()
        nursery.cancel_scope.cancel()


async def test_handler_error_is_a_result_and_the_actor_keeps_running() -> None:
    tool, _ = make_test_tool()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, tool_factory(tool))
        result = await ref.call(invoke("missing"), timeout=TIMEOUT)
        assert isinstance(result.error, NotFound)
        assert result.error.details == {"thing": "x"}
        assert ref.running
        again = await ref.call(invoke("ok"), timeout=TIMEOUT)
        assert again.unwrap() == Count(n=1)
        assert ref.stats().crashes == 0
        nursery.cancel_scope.cancel()


async def test_output_is_checked_against_the_output_model() -> None:
    tool, _ = make_test_tool()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, tool_factory(tool))
        coerced = await ref.call(invoke("as_dict"), timeout=TIMEOUT)
        assert coerced.unwrap() == Count(n=7)
        bad = await ref.call(invoke("bad_output"), timeout=TIMEOUT)
        assert isinstance(bad.error, ToolFailed)
        assert bad.error.details["errors"][0]["loc"] == ("n",)
        nursery.cancel_scope.cancel()


async def test_a_handler_bug_fails_only_its_own_call(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception in a handler is answered (ToolFailed, nothing of the exception
    named) and logged; the actor keeps serving, and a call in flight beside it is not failed."""
    tool, state = make_test_tool()
    waited: list[InvokeResult] = []
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, tool_factory(tool, max_concurrency=4))

        async def call_wait() -> None:
            waited.append(await ref.call(invoke("wait"), timeout=TIMEOUT))

        nursery.start_soon(call_wait)
        await trio.testing.wait_all_tasks_blocked()
        assert state["waiting"] == 1  # a sibling call is in flight on the same actor
        crashed = await ref.call(invoke("boom"), timeout=TIMEOUT)
        assert isinstance(crashed.error, ToolFailed)
        assert crashed.error.message == "the tool crashed while handling the call"
        assert "a bug" not in repr(crashed.error.__dict__) and "Boom" not in repr(crashed.error.__dict__)
        state["release"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(waited) == 1 and waited[0].error is None  # the sibling was not failed
        assert (await ref.call(invoke("ok"), timeout=TIMEOUT)).unwrap() == Count(n=1)
        assert ref.stats().crashes == 0 and ref.stats().restarts == 0
        nursery.cancel_scope.cancel()
    logged = [r for r in caplog.records if r.getMessage() == "tool crashed"]
    assert len(logged) == 1 and logged[0].error == "Boom" and logged[0].operation == "boom"  # type: ignore[attr-defined]


async def test_handlers_run_concurrently_up_to_max_concurrency() -> None:
    tool, state = make_test_tool()
    results: list[InvokeResult] = []

    async def call_wait(ref: actors.ActorRef[Invoke, InvokeResult]) -> None:
        results.append(await ref.call(invoke("wait"), timeout=TIMEOUT))

    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, tool_factory(tool, max_concurrency=2))
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as callers:
                for _ in range(3):
                    callers.start_soon(call_wait, ref)
                await trio.testing.wait_all_tasks_blocked()
                assert state["waiting"] == 2  # the third waits for a free slot
                assert ref.stats().in_flight == 2
                state["release"].set()
        assert len(results) == 3 and all(r.ok for r in results)
        nursery.cancel_scope.cancel()


def test_tool_actor_is_named_after_its_tool() -> None:
    actor = ToolActor(ECHO, max_concurrency=3)
    assert (actor.name, actor.max_concurrency, actor.definition) == ("tool:echo", 3, ECHO)
    assert tool_child(ECHO).id == "tool:echo"


async def test_unknown_message_type_is_a_bug() -> None:
    actor = ToolActor(ECHO)
    with pytest.raises(TypeError):
        await actor.handle("not an Invoke")  # type: ignore[arg-type]


def make_sync_tool() -> tuple[ToolDefinition, dict[str, Any]]:
    """Operations with a ``sync_handler``: answered inline by the serving loop."""
    state: dict[str, Any] = {"async": 0, "sync": 0, "tasks": set()}

    async def never(tctx: ToolContext, inputs: Empty) -> Count:
        state["async"] += 1
        return Count(n=-1)

    def now(tctx: ToolContext, inputs: Empty) -> Count:
        state["sync"] += 1
        state["tasks"].add(trio.lowlevel.current_task())
        return Count(n=state["sync"])

    def missing(tctx: ToolContext, inputs: Empty) -> Count:
        raise NotFound("no such thing", thing="y")

    def boom(tctx: ToolContext, inputs: Empty) -> Count:
        raise Boom("a sync bug")

    def bad_output(tctx: ToolContext, inputs: Empty) -> Any:
        return {"n": "nope"}

    ops = tuple(
        Operation(name, name, Empty, Count, never, sync_handler=handler)
        for name, handler in [("now", now), ("missing", missing), ("boom", boom), ("bad_output", bad_output)]
    )
    return ToolDefinition("synctool", "Sync", "answers inline", "0.0.1", (Scope("test", "t", ops),)), state


@pytest.mark.parametrize("concurrency", [1, 64])
async def test_sync_operations_are_answered_inline_with_the_same_checks(
    concurrency: int, caplog: pytest.LogCaptureFixture
) -> None:
    tool, state = make_sync_tool()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, tool_factory(tool, max_concurrency=concurrency))
        assert [(await ref.call(invoke("now"), timeout=TIMEOUT)).unwrap() for _ in range(3)] == [
            Count(n=1), Count(n=2), Count(n=3)]
        assert state["async"] == 0  # the async handler never ran
        assert len(state["tasks"]) == 1  # all in the actor's own serving task: no task per call
        missing = await ref.call(invoke("missing"), timeout=TIMEOUT)
        assert isinstance(missing.error, NotFound) and missing.error.details == {"thing": "y"}
        bad = await ref.call(invoke("bad_output"), timeout=TIMEOUT)
        assert isinstance(bad.error, ToolFailed)
        wrong_model = await ref.call(invoke("now", PingInput()), timeout=TIMEOUT)
        assert isinstance(wrong_model.error, ValidationFailed)
        unknown = await ref.call(invoke("nope"), timeout=TIMEOUT)
        assert isinstance(unknown.error, UnknownTool)
        with caplog.at_level("ERROR", logger="northstar.tools"):
            crashed = await ref.call(invoke("boom"), timeout=TIMEOUT)
        assert isinstance(crashed.error, ToolFailed) and "a sync bug" not in repr(crashed.error.__dict__)
        assert [r.getMessage() for r in caplog.records if r.name == "northstar.tools"] == ["tool crashed"]
        assert ref.running and ref.stats().crashes == 0
        assert (await ref.call(invoke("now"), timeout=TIMEOUT)).unwrap() == Count(n=4)
        nursery.cancel_scope.cancel()


async def test_echo_ping_has_a_sync_twin_that_does_the_same() -> None:
    op = ECHO.scopes[0].operations[0]
    assert op.sync_handler is not None
    inputs = PingInput(message="m", data={"k": [1]})
    a = await op.handler(tool_ctx(), inputs)
    b = op.sync_handler(tool_ctx(), inputs)
    assert isinstance(a, PingOutput) and isinstance(b, PingOutput)
    assert (a.pong, a.message, a.data) == (b.pong, b.message, b.data) == (True, "m", {"k": [1]})
