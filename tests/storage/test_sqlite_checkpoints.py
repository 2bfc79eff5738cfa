"""The WAL is checkpointed in the background, not inside the commits callers wait on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from northstar.storage import open_store
from northstar.storage import sqlite as sqlite_backend
from northstar.storage.sqlite_ops import WRITER_AUTOCHECKPOINT_PAGES


def wal_frames(path: Path) -> int:
    """Frames in the WAL not yet copied to the database (a PASSIVE probe from outside)."""
    conn = sqlite3.connect(str(path))
    try:
        _busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames) - int(done)
    finally:
        conn.close()


async def test_writer_leaves_checkpoints_to_the_background_task(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with open_store(f"sqlite:///{path}") as storage:
        db = storage.store.db
        pragma = await db.write(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        assert pragma == WRITER_AUTOCHECKPOINT_PAGES
        before, checkpointed = db.checkpoints, db.checkpointed
        for i in range(sqlite_backend.CHECKPOINT_EVERY_WRITES + 5):
            await storage.store.save("t", "draft", f"d{i}", {"i": i})
        with trio.fail_after(10):
            await checkpointed.wait()
        assert db.checkpoints > before
    # every acknowledged write survives, checkpointed or not
    async with open_store(f"sqlite:///{path}") as storage:
        assert len(await storage.store.list("t", "draft", limit=1000)) == sqlite_backend.CHECKPOINT_EVERY_WRITES + 5
    assert wal_frames(path) == 0


async def test_a_failing_checkpoint_never_fails_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from northstar.common.errors import StoreUnavailable
    from northstar.storage import sqlite_ops

    real = sqlite_ops.checkpoint
    failures: list[int] = []

    def flaky(conn: sqlite3.Connection) -> tuple[int, int, int]:
        if not failures:
            failures.append(1)
            raise StoreUnavailable("disk I/O error", retry_after=1)
        return real(conn)

    monkeypatch.setattr(sqlite_ops, "checkpoint", flaky)
    every = sqlite_backend.CHECKPOINT_EVERY_WRITES
    async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as storage:
        db = storage.store.db
        checkpointed = db.checkpointed
        for i in range(every * 2):
            await storage.store.save("t", "draft", f"d{i}", {"i": i})
        with trio.fail_after(10):
            await checkpointed.wait()  # the first round failed, the second went through
        assert failures == [1] and db.checkpoints >= 1
        assert (await storage.audit.append({"tenant": "t", "event": "still-writing"})).seq >= 1


def test_opening_waits_for_a_file_another_process_briefly_locks(tmp_path: Path) -> None:
    """Opening waits (busy handler, or the WAL-switch retry) while another connection holds the file."""
    import threading

    from northstar.storage import sqlite_ops

    path = tmp_path / "locked.db"
    holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x)")
    released = threading.Event()

    def release() -> None:
        holder.execute("COMMIT")
        holder.close()
        released.set()

    timer = threading.Timer(0.3, release)  # the other process finishes its start-up
    timer.start()
    try:
        conn = sqlite_ops.connect(str(path), busy_timeout_ms=5000, synchronous="FULL", readonly=False)
        assert released.is_set()  # it waited for the holder instead of failing
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    finally:
        timer.join(timeout=5)


def test_the_checkpoint_interval_aims_at_the_target_frames() -> None:
    every = sqlite_backend.next_checkpoint_every
    target = sqlite_backend.CHECKPOINT_TARGET_FRAMES
    assert every(frames=250, writes=50, current=50) == target // 5  # 5 frames a write
    assert every(frames=50 * 200, writes=50, current=50) == sqlite_backend.CHECKPOINT_MIN_WRITES  # huge writes
    assert every(frames=50, writes=50, current=50) == sqlite_backend.CHECKPOINT_MAX_WRITES  # tiny writes
    assert every(frames=0, writes=50, current=77) == 77  # nothing measured: unchanged
    assert every(frames=100, writes=0, current=77) == 77


async def test_small_writes_are_checkpointed_less_often_than_large_ones(tmp_path: Path) -> None:
    """One-row commits (a lone caller) meet far fewer checkpoints; big ones keep the WAL small."""
    intervals = {}
    for label in ("small", "large"):
        async with open_store(f"sqlite:///{tmp_path / label}.db") as storage:
            db = storage.store.db
            checkpointed = db.checkpointed
            for i in range(sqlite_backend.CHECKPOINT_EVERY_WRITES):
                if label == "small":  # one audit record per commit, as a lone caller makes them
                    await storage.audit.append({"tenant": "t", "event": "decision", "i": i})
                else:
                    await storage.store.save("t", "draft", f"d{i}", {"p": "y" * 400_000})
            with trio.fail_after(10):
                await checkpointed.wait()
            intervals[label] = db.checkpoint_every
    assert intervals["small"] > sqlite_backend.CHECKPOINT_EVERY_WRITES > intervals["large"], intervals


async def test_under_steady_writes_the_wal_starts_over_instead_of_growing(tmp_path: Path) -> None:
    """One-row commits back to back (no idle moment for a checkpoint to finish alone): each
    background pass is caught up on the writer's thread, so SQLite rewrites the WAL in place.
    Without the catch-up the WAL keeps every commit's frames (at least two pages, 8 KiB, each)
    until the writer's 80 MB safety net, and the interval computed from it falls to the minimum.
    Writes go on until three background passes ran, however slowly the niced checkpointer gets
    the CPU on a busy machine; a starved checkpointer lets the WAL run longer between restarts
    (11 MB, two cores busy), never as long as the whole run."""
    path = tmp_path / "steady.db"
    commits = 0
    async with open_store(f"sqlite:///{path}") as storage:
        db = storage.store.db
        with trio.fail_after(120):
            while db.checkpoints < 3 or commits < 5000:
                await storage.audit.append({"tenant": "t", "event": "decision", "i": commits})
                commits += 1
                assert commits < 100_000, "the background checkpoints never ran"
        wal = (tmp_path / "steady.db-wal").stat().st_size
        assert db.wal_restarts >= 1, (db.checkpoints, db.wal_restarts)
        assert wal < commits * 8192, (wal, commits)  # rewritten in place, not grown by every commit
        assert db.checkpoint_every > sqlite_backend.CHECKPOINT_MIN_WRITES
    async with open_store(f"sqlite:///{path}") as storage:
        assert await storage.audit.head_seq() == commits
        assert (await storage.audit.verify()).ok
