"""SerialThread: the SQLite writer's own thread (order, results, errors, cancellation, stop)."""

from __future__ import annotations

import threading
from typing import Any

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


async def test_a_background_thread_runs_at_a_lower_priority_and_the_writer_does_not() -> None:
    import os

    def own_priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    background, writer = SerialThread("bg", nice=19), SerialThread("w")
    assert await background.run(own_priority) == 19 and background.niced
    assert await writer.run(own_priority) == os.getpriority(os.PRIO_PROCESS, 0) and not writer.niced
    background.stop()
    writer.stop()


async def test_the_sqlite_checkpointer_runs_on_a_niced_thread(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from northstar.storage import open_store, sqlite_ops
    from northstar.storage import sqlite as sqlite_backend

    real, seen = sqlite_ops.checkpoint, []

    def checkpoint(conn: Any) -> Any:
        me = threading.current_thread().name.split(":")[0]
        seen.append((me, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return real(conn)

    monkeypatch.setattr(sqlite_ops, "checkpoint", checkpoint)
    async with open_store(f"sqlite:///{tmp_path / 's.db'}") as storage:
        checkpointed = storage.store.db.checkpointed
        for i in range(sqlite_backend.CHECKPOINT_EVERY_WRITES):
            await storage.audit.append({"tenant": "t", "event": "decision", "i": i})
        with trio.fail_after(10):
            await checkpointed.wait()
        # the background pass on the niced thread; its catch-up between two writes on the writer's
        assert seen[0] == ("northstar-sqlite-checkpointer", sqlite_backend.CHECKPOINT_NICE), seen
        assert ("northstar-sqlite-writer", os.getpriority(os.PRIO_PROCESS, 0)) in seen, seen  # not niced
        names = {t.name for t in threading.enumerate()}
        assert any(n.startswith("northstar-sqlite-checkpointer:") for n in names)
        assert any(n.startswith("northstar-sqlite-writer:") for n in names)
