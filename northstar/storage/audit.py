"""The audit log front: group commit over a backend's batch writer, shared by both backends.

Appenders check and encode their record in their own task, queue it on a bounded channel and
wait. One flusher task (:meth:`GroupCommitAuditLog.run`) takes everything queued (up to
``max_batch``), has the backend chain and insert it in ONE transaction, and only after the
commit returns wakes each appender with its :class:`AuditEntry`. Nothing is acknowledged before
it is durable.

Failure is loud and closed: a queue full for ``queue_timeout`` seconds, a flusher that is not
running, or a failed flush gives the appender :class:`AuditUnavailable`; ``healthy`` turns False
after a failed flush and True again after the next successful one, so the policy layer can refuse
calls meanwhile. An appender cancelled (or timed out) after queuing may still see its record
committed: ``AuditUnavailable`` means "not known to be committed", never "certainly absent".

A lone call commits in its own task: when the composition root's ``lone`` hint says no other
call is in flight, nothing is queued or being flushed, the backend can write on the calling
thread (SQLite, its writer idle) and recent commits were quick (under ``HERE_BUDGET_S``), the
appender writes its record itself, on the event loop's thread. A call alone has nobody to
batch with, and the hand-offs it skips (to the flusher task, to the writer's thread and back)
cost about as much as the commit's own statements. Anything else that arrives meanwhile waits
for one commit; a slow disk turns it off (the budget), and the group commit is unchanged
whenever a second call is in flight.

Sealing (with an :class:`~.audit_seal.AuditSeal`): each commit also moves the head's MAC (same
statement, no extra write), and :meth:`GroupCommitAuditLog.run_anchors`, a second task off the
commit path, anchors the newest committed head every ``anchor_every`` records or
``anchor_interval_s`` seconds, and once more when the flusher stops: one small write to the
``audit_anchors`` table plus one line appended (and fsynced) to the anchor file. A failed anchor
is logged and retried at the next round; it never fails a call.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from northstar.common.errors import AuditUnavailable, NorthstarError
from northstar.common.limits import MAX_FILTER_CHARS, MAX_SEQ, check_int, check_optional_int, check_text
from northstar.common.telemetry import Tracing, recorded

from .audit_chain import AuditRow, PreparedRecord, prepare_record
from .audit_seal import Anchor, AuditSeal, append_anchor, read_anchors
from .core import check_limit, normalize_ts, utc_now_iso
from .records import AuditEntry, VerifyReport

log = logging.getLogger("northstar.storage.audit")

#: ``query`` returns at most this many entries per call; page on with ``after_seq``.
MAX_QUERY_LIMIT = 100_000
#: A lone caller commits on the event loop's thread only while commits take less than this
#: (a moving average of every commit's time): a slow disk never stalls the loop for long.
HERE_BUDGET_S = 0.002


class AuditIO(Protocol):
    """What a backend provides: one-transaction batch writes and reads of the stored chain."""

    async def register_seal(self) -> None: ...

    async def write_batch(self, batch: builtins.list[PreparedRecord]) -> builtins.list[AuditRow]: ...

    async def write_anchor(self, anchor: Anchor) -> None: ...

    # Optional: ``write_batch_here(batch) -> rows | None`` writes on the calling thread (None: not now).

    async def query(self, filters: dict[str, Any], after_seq: int | None,
                    limit: int, by_tenant_seq: bool = False) -> builtins.list[AuditEntry]: ...

    async def get(self, seq: int) -> AuditEntry | None: ...

    async def head_seq(self) -> int: ...

    async def verify(self, tenant: str | None, anchors: builtins.list[Anchor]) -> VerifyReport: ...


@dataclass(slots=True)
class AuditStats:
    appended: int = 0        # records committed
    flushes: int = 0         # batches committed (one transaction each)
    failed_flushes: int = 0
    largest_batch: int = 0
    anchors: int = 0         # anchors written (table and file)
    failed_anchors: int = 0
    here: int = 0            # commits a lone caller made in its own task (among ``flushes``)


@dataclass(slots=True, eq=False)
class _Pending:
    item: PreparedRecord
    done: trio.Event = field(default_factory=trio.Event)
    entry: AuditEntry | None = None
    error: AuditUnavailable | None = None
    batch: int = 0  # records in the commit that carried it

    def settle(self, entry: AuditEntry | None, error: AuditUnavailable | None = None) -> None:
        if not self.done.is_set():
            self.entry, self.error = entry, error
            self.done.set()


class GroupCommitAuditLog:
    """An :class:`~northstar.storage.base.AuditLog` batching concurrent appends into commits."""

    def __init__(self, io: AuditIO, *, max_pending: int = 1024, max_batch: int = 256,
                 queue_timeout: float = 5.0, commit_timeout: float = 30.0, seal: AuditSeal | None = None) -> None:
        if max_pending < 1 or max_batch < 1:
            raise ValueError("max_pending and max_batch must be >= 1")
        self._io = io
        self.seal = seal
        self._last_row: AuditRow | None = None  # this process's newest committed entry
        self._anchored_seq = 0
        self._unanchored = 0  # records committed since the last anchor
        self._anchor_due = trio.Event()
        self._max_batch = max_batch
        self._queue_timeout = queue_timeout
        self._commit_timeout = commit_timeout
        self._send, self._receive = trio.open_memory_channel[_Pending](max_pending)
        self._inflight: builtins.list[_Pending] = []
        self._healthy = True
        self._running = False
        self._closed = False
        self.stats = AuditStats()
        # Called after each durable commit with (seconds the write took, records in it): metrics.
        self.on_commit: Callable[[float, int], None] | None = None
        self.tracing = Tracing()  # the runtime's (set by the composition root); off by default
        # True when the appending call is the only one in flight (set by the composition root);
        # None: every record goes through the flusher.
        self.lone: Callable[[], bool] | None = None
        self._write_here: Callable[[builtins.list[PreparedRecord]], builtins.list[AuditRow] | None] | None = (
            getattr(io, "write_batch_here", None))
        self._commit_s = 0.0  # moving average of the commits' time
        self.here_budget_s = HERE_BUDGET_S

    @property
    def healthy(self) -> bool:
        """False from a failed flush (or a stopped flusher) until a flush succeeds."""
        return self._healthy and self._running

    @property
    def pending(self) -> int:
        return self._send.statistics().current_buffer_used

    # -- appending -----------------------------------------------------------------------------

    async def append(self, record: dict[str, Any]) -> AuditEntry:
        """Return the committed entry, or raise ``AuditUnavailable`` (never ack before commit).

        Traced (``tracing`` on): a ``northstar.audit.commit`` span from the append to its durable
        commit, child of the caller's span: the record's event, its ``seq``, the commit's size."""
        if not self.tracing.enabled:
            return await self._append(_Pending(prepare_record(record)))
        attributes = {"northstar.audit_event": str(record.get("event", ""))}
        with self.tracing.span("northstar.audit.commit", attributes=attributes) as span, recorded(span):
            pending = _Pending(prepare_record(record))
            entry = await self._append(pending)
            span.set_attributes({"northstar.audit_seq": entry.seq, "northstar.audit_batch_size": pending.batch})
            return entry

    async def _append(self, pending: _Pending) -> AuditEntry:
        if self._closed or not self._running:
            raise AuditUnavailable("the audit flusher is not running", retry_after=1)
        if self._may_commit_here() and self._commit_here(pending):
            return self._answer(pending)
        try:
            self._send.send_nowait(pending)  # the common case: room in the queue, no timer needed
        except trio.WouldBlock:
            await self._enqueue(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise AuditUnavailable("the audit log is closed", retry_after=1) from None
        with trio.CancelScope(deadline=trio.current_time() + self._commit_timeout):
            await pending.done.wait()
        if not pending.done.is_set():
            raise AuditUnavailable("the audit commit did not finish in time", retry_after=1)
        return self._answer(pending)

    @staticmethod
    def _answer(pending: _Pending) -> AuditEntry:
        if pending.error is not None:
            raise pending.error
        assert pending.entry is not None
        return pending.entry

    def _may_commit_here(self) -> bool:
        # the hint first: under load it is False, and the rest is never looked at
        return (self._write_here is not None and self.lone is not None and self.lone() and not self._inflight
                and self._commit_s < self.here_budget_s and self._send.statistics().current_buffer_used == 0)

    def _commit_here(self, pending: _Pending) -> bool:
        """Commit ``pending`` on this thread now; False (nothing written) when the backend cannot."""
        assert self._write_here is not None
        batch = [pending]
        started = time.perf_counter()
        try:
            rows = self._write_here([pending.item])
        except Exception as exc:
            self._failed(batch, exc)
            return True
        if rows is None:
            return False
        self.stats.here += 1
        self._committed(batch, rows, time.perf_counter() - started)
        return True

    async def _enqueue(self, pending: _Pending) -> None:
        with trio.move_on_after(self._queue_timeout) as scope:
            try:
                await self._send.send(pending)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise AuditUnavailable("the audit log is closed", retry_after=1) from None
        if scope.cancelled_caught:
            raise AuditUnavailable("the audit queue is full", retry_after=1)

    # -- the flusher ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The flusher: start it with ``nursery.start``; it returns after :meth:`aclose` drained."""
        if self._running or self._closed:
            raise RuntimeError("the audit flusher runs once")
        self._running = True
        try:
            task_status.started()
            while (batch := await self._next_batch()) is not None:
                await self._flush(batch)
        finally:
            self._running = False
            self._closed = True
            self._fail_leftovers()
            self._receive.close()
            self._anchor_due.set()  # the anchorer makes its last anchor and returns

    async def _next_batch(self) -> builtins.list[_Pending] | None:
        try:
            batch = [await self._receive.receive()]
        except trio.EndOfChannel:
            return None
        # Let the tasks that are already runnable take their turn first: callers finishing in
        # the same scheduling round join this commit instead of each paying for their own.
        # One pass of the run queue, no timer: a lone caller is not kept waiting, and with
        # nothing runnable (a lone caller) there is nobody to wait for.
        if trio.lowlevel.current_statistics().tasks_runnable:
            await trio.lowlevel.cancel_shielded_checkpoint()
        while len(batch) < self._max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return batch

    async def _flush(self, batch: builtins.list[_Pending]) -> None:
        self._inflight = batch  # settled by _fail_leftovers if we are cancelled mid-write
        started = time.perf_counter()
        try:
            rows = await self._io.write_batch([p.item for p in batch])
        except Exception as exc:
            self._inflight = []
            self._failed(batch, exc)
            return
        self._inflight = []
        self._committed(batch, rows, time.perf_counter() - started)

    def _failed(self, batch: builtins.list[_Pending], exc: Exception) -> None:
        self._healthy = False
        self.stats.failed_flushes += 1
        log.error("audit flush of %d records failed: %s", len(batch), exc, exc_info=exc)
        for p in batch:
            p.settle(None, AuditUnavailable("the audit log could not commit", retry_after=1))

    def _committed(self, batch: builtins.list[_Pending], rows: builtins.list[AuditRow], seconds: float) -> None:
        self._healthy = True
        self.stats.flushes += 1
        self.stats.appended += len(rows)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        self._commit_s += 0.2 * (seconds - self._commit_s)
        if self.on_commit is not None:
            self.on_commit(seconds, len(rows))
        for p, row in zip(batch, rows, strict=True):
            p.batch = len(rows)
            p.settle(row.to_entry())
        if self.seal is not None:
            self._last_row = rows[-1]
            self._unanchored += len(rows)
            if self._unanchored >= self.seal.anchor_every:
                self._anchor_due.set()

    def _fail_leftovers(self) -> None:
        """On cancellation: whatever was queued or in flight gets a definite (unknown) answer."""
        error = AuditUnavailable("the audit flusher stopped; the record may not be committed", retry_after=1)
        for p in self._inflight:
            p.settle(None, error)
        while True:
            try:
                self._receive.receive_nowait().settle(None, error)
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break

    # -- anchoring -----------------------------------------------------------------------------

    async def run_anchors(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Anchor the committed head off the commit path; returns after the flusher stopped.

        Start it beside :meth:`run` (``open_store`` does). Without a seal it returns at once.
        """
        task_status.started()
        seal = self.seal
        if seal is None:
            return
        while True:
            with trio.move_on_after(seal.anchor_interval_s):
                await self._anchor_due.wait()
            stopped = self._closed and not self._running
            if not stopped:
                self._anchor_due = trio.Event()
            await self.anchor_now()
            if stopped:
                return

    async def anchor_now(self) -> Anchor | None:
        """Anchor this process's newest committed entry, if it is not anchored yet."""
        row, seal = self._last_row, self.seal
        if seal is None or row is None or row.seq <= self._anchored_seq:
            return None
        anchor = seal.anchor(row.seq, row.hash, utc_now_iso())
        pending, self._unanchored = self._unanchored, 0
        try:
            await self._io.write_anchor(anchor)
            if seal.anchor_file is not None:
                await trio.to_thread.run_sync(append_anchor, seal.anchor_file, anchor)
        except (OSError, NorthstarError) as exc:
            self._unanchored += pending
            self.stats.failed_anchors += 1
            log.warning("audit anchor at seq %d failed (retried at the next round): %s", row.seq, exc)
            return None
        self._anchored_seq = row.seq
        self.stats.anchors += 1
        return anchor

    def shutdown(self) -> None:
        """Refuse new appends; the flusher commits what is queued, then :meth:`run` returns."""
        self._closed = True
        self._send.close()

    async def aclose(self) -> None:
        self.shutdown()
        await trio.lowlevel.checkpoint()

    # -- reading -------------------------------------------------------------------------------

    async def query(self, *, tenant: str | None, tool: str | None = None, user: str | None = None,
                    decision: str | None = None, since: str | None = None, until: str | None = None,
                    after_seq: int | None = None, limit: int = 100,
                    by_tenant_seq: bool = False) -> builtins.list[AuditEntry]:
        """Entries in ``seq`` order; ``tenant=None`` means every tenant; ``since`` <= ts < ``until``.

        ``by_tenant_seq`` (``tenant`` required): that tenant's entries in ``tenant_seq`` order,
        ``after_seq`` being a ``tenant_seq``. Every argument is checked here, in the caller's task
        (``ValidationFailed``): nothing out of range reaches the database driver.
        """
        if by_tenant_seq and tenant is None:
            raise ValueError("a query by tenant_seq needs the tenant")
        filters = {
            "tenant": check_text("tenant", tenant, MAX_FILTER_CHARS),
            "tool": check_text("tool", tool, MAX_FILTER_CHARS),
            "user_id": check_text("user", user, MAX_FILTER_CHARS),
            "decision": check_text("decision", decision, MAX_FILTER_CHARS),
            "ts_from": normalize_ts(since) if since else None,
            "ts_to": normalize_ts(until) if until else None,
        }
        after = check_optional_int("after_seq", after_seq, 0, MAX_SEQ)
        return await self._io.query(filters, after, check_limit(limit, MAX_QUERY_LIMIT), by_tenant_seq)

    async def get(self, seq: int) -> AuditEntry | None:
        return await self._io.get(check_int("seq", seq, 0, MAX_SEQ))

    async def head_seq(self) -> int:
        """The seq of the newest committed entry, every process's (0: the log is empty)."""
        return await self._io.head_seq()

    async def verify(self, tenant: str | None = None) -> VerifyReport:
        """Walk the chain; with a seal, also hold it to its anchors (table and file) and sealed head."""
        anchor_file = None if self.seal is None else self.seal.anchor_file
        anchors, problems = await trio.to_thread.run_sync(read_anchors, anchor_file)
        report = await self._io.verify(tenant, anchors)
        if problems and report.ok:
            return VerifyReport(ok=False, count=report.count, reason=problems[0], sealed=report.sealed,
                                anchors=report.anchors, anchored_seq=report.anchored_seq)
        return report
