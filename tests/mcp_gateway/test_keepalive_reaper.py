"""The keep-alive reaper never lets one connection's timer take the HTTP server down.

Found under the benchmark's load pattern: a timer still armed when its connection's task
group had exited fired into ``None`` (Hypercorn drops the nursery on exit). The exception
escaped the reaper task and crashed the whole HTTP face: every client was disconnected
until the supervisor restarted it. The timers run on Hypercorn's own per-connection
``TaskGroup`` here, as they do when serving.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.trio.task_group import TaskGroup

from northstar.mcp_gateway.transports.http.connection import IdleReaper, KeepAliveTimer


async def gone_task_group() -> TaskGroup:
    """A connection's task group after the connection ended."""
    async with TaskGroup() as task_group:
        pass
    return task_group


async def test_a_timer_of_a_finished_connection_fires_quietly() -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    timer = KeepAliveTimer(IdleReaper(5.0))
    await timer.restart(await gone_task_group(), close)
    timer.fire()  # raised AttributeError before the fix
    assert closed == []


async def test_a_timer_of_a_live_idle_connection_closes_it() -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    async with TaskGroup() as task_group:
        timer = KeepAliveTimer(IdleReaper(5.0))
        await timer.restart(task_group, close)
        timer.fire()
    assert closed == ["closed"]


async def test_a_timer_restarted_by_a_new_request_does_not_close(autojump_clock: trio.abc.Clock) -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    async with TaskGroup() as task_group:
        timer = KeepAliveTimer(IdleReaper(5.0))
        await timer.restart(task_group, close)
        timer.fire()  # the close task is scheduled for this idle period...
        await timer.stop()  # ...but a request started before it ran
    assert closed == []


async def test_the_reaper_survives_a_failing_timer_and_expires_the_rest(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    closed: list[str] = []

    async def close() -> None:
        closed.append("closed")

    class BrokenTimer(KeepAliveTimer):
        __slots__ = ()

        def fire(self) -> None:
            raise RuntimeError("boom")

    reaper = IdleReaper(5.0)
    shutdown = trio.Event()
    with caplog.at_level(logging.ERROR, logger="northstar.server"):
        async with TaskGroup() as task_group:
            task_group.spawn(reaper.run, shutdown)
            broken = BrokenTimer(reaper)
            await broken.restart(task_group, close)
            await trio.sleep(1)
            good = KeepAliveTimer(reaper)
            await good.restart(task_group, close)
            await trio.sleep(10)  # both deadlines pass: the broken one first
            assert closed == ["closed"]
            assert not reaper.idle
            shutdown.set()
    assert any("keep-alive timer failed" in r.getMessage() for r in caplog.records)


@pytest.fixture
def autojump_clock() -> Any:
    return trio.testing.MockClock(autojump_threshold=0)
