"""A lone call's audit record is committed in its own task (no flusher, no writer thread hop),
on the real SQLite backend; everything else still goes through the group commit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from northstar.common.errors import AuditUnavailable, StoreUnavailable
from northstar.storage import audit as audit_module
from northstar.storage import open_store, sqlite_ops
from northstar.storage.serial_thread import SerialThread


def spy_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each audit write ran on."""
    real, seen = sqlite_ops.audit_write, []

    def audit_write(*args: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(sqlite_ops, "audit_write", audit_write)
    return seen


async def test_a_lone_append_commits_on_the_callers_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_threads(monkeypatch)
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as storage:
        log = storage.audit
        log.lone = lambda: True
        log.here_budget_s = float("inf")  # however slow this machine's disk is today
        first = await log.append({"tenant": "t", "event": "one"})
        second = await log.append({"tenant": "t", "event": "two"})
        assert (first.seq, second.seq) == (1, 2) and second.prev_hash == first.hash
        assert log.stats.here == 2 and log.stats.flushes == 2 and log.stats.appended == 2
        assert seen == [threading.current_thread().name] * 2  # the trio thread, no hand-off
        log.lone = lambda: False  # a second call in flight: the group commit, on the writer's thread
        await log.append({"tenant": "t", "event": "three"})
        assert log.stats.here == 2 and seen[-1].startswith("northstar-sqlite-writer:")
        assert (await log.verify()).ok
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as storage:  # durable, whichever way
        assert [e.record["event"] for e in await storage.audit.query(tenant="t")] == ["one", "two", "three"]


async def test_without_the_hint_every_record_goes_through_the_flusher(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_threads(monkeypatch)
    async with open_store(f"sqlite:///{tmp_path / 'b.db'}") as storage:
        assert storage.audit.lone is None  # only the composition root sets it
        await storage.audit.append({"tenant": "t", "event": "x"})
        assert storage.audit.stats.here == 0 and seen[0].startswith("northstar-sqlite-writer:")


async def test_a_busy_writer_sends_the_lone_record_to_the_flusher(tmp_path: Path) -> None:
    """A write queued or running on the writer's thread (a draft save, a checkpoint catch-up):
    the lone record waits its turn behind it, never on the same connection at the same time."""
    async with open_store(f"sqlite:///{tmp_path / 'c.db'}") as storage:
        log, db = storage.audit, storage.store.db
        log.lone = lambda: True
        log.here_budget_s = float("inf")
        release, started = threading.Event(), threading.Event()

        def slow(conn: Any) -> None:
            started.set()
            assert release.wait(10)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(db.write, slow)
            await trio.to_thread.run_sync(started.wait, 10)
            assert not db._write_thread.idle
            done: list[int] = []

            async def append() -> None:
                done.append((await log.append({"tenant": "t", "event": "behind"})).seq)

            nursery.start_soon(append)
            await trio.testing.wait_all_tasks_blocked()
            assert done == [] and log.stats.here == 0  # queued behind the running write
            release.set()
        assert done == [1] and log.stats.here == 0 and log.stats.flushes == 1


async def test_slow_commits_turn_the_lone_path_off(tmp_path: Path) -> None:
    """Commits averaging over the budget (a slow disk): the loop is no longer held for them."""
    async with open_store(f"sqlite:///{tmp_path / 'd.db'}") as storage:
        log = storage.audit
        log.lone = lambda: True
        assert log.here_budget_s == audit_module.HERE_BUDGET_S
        log._commit_s = log.here_budget_s * 2  # what a run of slow commits leaves
        await log.append({"tenant": "t", "event": "slow disk"})
        assert log.stats.here == 0 and log.stats.flushes == 1
        log._commit_s, log.here_budget_s = 0.0, float("inf")  # quick again
        await log.append({"tenant": "t", "event": "quick"})
        assert log.stats.here == 1


async def test_a_failed_lone_commit_fails_closed_and_heals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sqlite_ops.audit_write
    failing = [True]

    def audit_write(*args: Any) -> Any:
        if failing[0]:
            raise StoreUnavailable("disk I/O error", retry_after=1)
        return real(*args)

    monkeypatch.setattr(sqlite_ops, "audit_write", audit_write)
    async with open_store(f"sqlite:///{tmp_path / 'e.db'}") as storage:
        log = storage.audit
        log.lone = lambda: True
        log.here_budget_s = float("inf")
        with pytest.raises(AuditUnavailable):
            await log.append({"tenant": "t", "event": "lost?"})
        assert not log.healthy and log.stats.failed_flushes == 1
        failing[0] = False
        entry = await log.append({"tenant": "t", "event": "back"})
        assert entry.seq == 1 and log.healthy and log.stats.here == 1


async def test_run_here_refuses_a_busy_thread() -> None:
    thread = SerialThread("run-here")
    try:
        assert thread.idle and thread.run_here(lambda x: x + 1, 1) == 2
        gate = threading.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(thread.run, gate.wait, 10)
            await trio.testing.wait_all_tasks_blocked()
            assert not thread.idle
            with pytest.raises(RuntimeError):
                thread.run_here(lambda: None)
            gate.set()
        assert thread.idle
    finally:
        thread.stop()
    assert not thread.idle
