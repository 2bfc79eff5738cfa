"""Group commit on a fake backend: batching, backpressure, failure and shutdown, deterministically."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from northstar.common.errors import AuditUnavailable
from northstar.storage.audit import GroupCommitAuditLog
from northstar.storage.audit_chain import GENESIS_HASH, AuditRow, PreparedRecord, build_rows
from northstar.storage.records import AuditEntry, VerifyReport


class FakeIO:
    """Commits in memory; ``gate`` (when set) holds every write until opened; ``fail`` raises."""

    def __init__(self) -> None:
        self.rows: list[AuditRow] = []
        self.batches: list[int] = []
        self.gate: trio.Event | None = None
        self.fail: Exception | None = None
        self.anchors: list[Any] = []

    async def write_batch(self, batch: list[PreparedRecord]) -> list[AuditRow]:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        last = self.rows[-1] if self.rows else None
        rows = build_rows(batch, last.seq if last else 0, last.hash if last else GENESIS_HASH, "ts")
        self.rows += rows
        self.batches.append(len(rows))
        return rows

    async def query(self, filters: dict[str, Any], after_seq: int | None, limit: int,
                    by_tenant_seq: bool = False) -> list[AuditEntry]:
        return [r.to_entry() for r in self.rows][:limit]

    async def get(self, seq: int) -> AuditEntry | None:
        return None

    async def write_anchor(self, anchor: Any) -> None:
        self.anchors.append(anchor)

    async def verify(self, tenant: str | None, anchors: Any = ()) -> VerifyReport:
        return VerifyReport(True, len(self.rows))


async def test_appends_queued_together_are_committed_in_one_batch() -> None:
    io = FakeIO()
    io.gate = trio.Event()
    log = GroupCommitAuditLog(io)
    entries: list[AuditEntry] = []

    async def append(i: int) -> None:
        entries.append(await log.append({"i": i}))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            for i in range(50):
                nursery.start_soon(append, i)
            await trio.testing.wait_all_tasks_blocked()
            io.gate.set()  # all 50 were queued while the flusher waited: one transaction
            while len(entries) < 50:
                await trio.testing.wait_all_tasks_blocked()
            log.shutdown()
    assert io.batches == [50]
    assert (log.stats.flushes, log.stats.appended, log.stats.largest_batch) == (1, 50, 50)
    assert sorted(e.seq for e in entries) == list(range(1, 51))


async def test_nothing_is_acknowledged_before_the_commit() -> None:
    io = FakeIO()
    io.gate = trio.Event()
    log = GroupCommitAuditLog(io)
    got: list[AuditEntry] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)

            async def append() -> None:
                got.append(await log.append({"x": 1}))

            nursery.start_soon(append)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [] and io.rows == []
            io.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert [e.seq for e in got] == [1] and len(io.rows) == 1
            log.shutdown()


async def test_full_queue_makes_appenders_wait_then_fail(mock_clock: trio.testing.MockClock) -> None:
    io = FakeIO()
    io.gate = trio.Event()
    log = GroupCommitAuditLog(io, max_pending=2, queue_timeout=0.05)
    outcomes: list[str] = []

    async def append(i: int) -> None:
        try:
            await log.append({"i": i})
            outcomes.append("ok")
        except AuditUnavailable as exc:
            outcomes.append(exc.message)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            # 1 in flight (held by the gate) + 2 queued; the other 3 find the queue full
            for i in range(6):
                nursery.start_soon(append, i)
                await trio.testing.wait_all_tasks_blocked()
            assert log.pending == 2
            mock_clock.jump(0.1)  # past queue_timeout: the waiting appenders give up
            await trio.testing.wait_all_tasks_blocked()
            assert outcomes == ["the audit queue is full"] * 3
            io.gate.set()
            await trio.testing.wait_all_tasks_blocked()
            log.shutdown()
    assert outcomes.count("ok") == 3
    assert outcomes.count("the audit queue is full") == 3


async def test_failed_flush_fails_the_batch_and_marks_unhealthy_until_recovery() -> None:
    io = FakeIO()
    io.fail = OSError("disk full")
    log = GroupCommitAuditLog(io)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            assert log.healthy
            with pytest.raises(AuditUnavailable):
                await log.append({"i": 1})
            assert not log.healthy and log.stats.failed_flushes == 1
            io.fail = None
            entry = await log.append({"i": 2})
            assert log.healthy and entry.seq == 1  # the failed batch consumed no sequence number
            log.shutdown()


async def test_append_without_a_running_flusher_fails_fast() -> None:
    log = GroupCommitAuditLog(FakeIO())
    assert not log.healthy
    with pytest.raises(AuditUnavailable):
        await log.append({"x": 1})


async def test_shutdown_drains_the_queue_then_refuses() -> None:
    io = FakeIO()
    io.gate = trio.Event()
    log = GroupCommitAuditLog(io)
    got: list[int] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)

            async def append(i: int) -> None:
                got.append((await log.append({"i": i})).seq)

            for i in range(5):
                nursery.start_soon(append, i)
            await trio.testing.wait_all_tasks_blocked()
            log.shutdown()
            io.gate.set()
    assert sorted(got) == [1, 2, 3, 4, 5]
    with pytest.raises(AuditUnavailable):
        await log.append({"late": True})


async def test_cancelled_flusher_answers_every_waiter() -> None:
    io = FakeIO()
    io.gate = trio.Event()
    log = GroupCommitAuditLog(io)
    errors: list[str] = []

    async def append(i: int) -> None:
        try:
            await log.append({"i": i})
        except AuditUnavailable as exc:
            errors.append(exc.code)

    with trio.fail_after(5):
        async with trio.open_nursery() as outer:
            for i in range(3):
                outer.start_soon(append, i)
            async with trio.open_nursery() as flusher:
                await flusher.start(log.run)
                for i in range(3):
                    outer.start_soon(append, i)
                await trio.testing.wait_all_tasks_blocked()
                flusher.cancel_scope.cancel()
    assert errors == ["audit_unavailable"] * 6
    assert not log.healthy
