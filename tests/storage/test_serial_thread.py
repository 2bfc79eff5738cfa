"""SerialThread: the SQLite writer's own thread (order, results, errors, cancellation, stop)."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from northstar.storage.serial_thread import SerialThread, ThreadStopped


async def test_jobs_run_in_order_on_one_thread_and_return_their_results() -> None:
    worker = SerialThread("t")
    seen: list[tuple[int, int]] = []

    def job(n: int) -> int:
        seen.append((n, threading.get_ident()))
        return n * n

    results: dict[int, int] = {}
    submitted: list[int] = []
    async with trio.open_nursery() as nursery:
        for n in range(20):
            async def one(n: int = n) -> None:
                submitted.append(n)  # run() queues the job before its first yield
                results[n] = await worker.run(job, n)
            nursery.start_soon(one)
    assert results == {n: n * n for n in range(20)}
    assert [n for n, _ in seen] == submitted  # arrival order
    assert len({ident for _, ident in seen}) == 1 and seen[0][1] != threading.get_ident()
    worker.stop()


async def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    worker = SerialThread("t")

    def bad() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await worker.run(bad)
    assert await worker.run(lambda: 7) == 7
    worker.stop()


async def test_a_cancelled_caller_waits_for_its_job_then_sees_the_cancellation() -> None:
    """Never abandoned: the job finishes whole before the caller leaves (its outcome is known)."""
    worker = SerialThread("t")
    started, finish = threading.Event(), threading.Event()
    done: list[str] = []

    def slow() -> str:
        started.set()
        finish.wait(10)
        done.append("finished")
        return "ok"

    scope = trio.CancelScope()
    outcome: list[str] = []

    async def caller() -> None:
        with scope:
            outcome.append(await worker.run(slow))
            await trio.lowlevel.checkpoint()  # the cancellation is delivered here
            outcome.append("not cancelled")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller)
        await trio.to_thread.run_sync(started.wait, 10)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert done == [] and outcome == []  # cancelled, yet still waiting for its job
        finish.set()
    assert scope.cancelled_caught and done == ["finished"] and outcome == ["ok"]
    # a caller cancelled before submitting submits nothing
    with trio.CancelScope() as scope:
        scope.cancel()
        await worker.run(done.append, "never")
    assert done == ["finished"]
    worker.stop()


async def test_stop_runs_what_is_queued_then_refuses() -> None:
    worker = SerialThread("t")
    assert await worker.run(lambda: 1) == 1
    worker.stop()
    with pytest.raises(ThreadStopped):
        await worker.run(lambda: 2)
    await trio.to_thread.run_sync(worker._thread.join, 5)
    assert not worker.alive
