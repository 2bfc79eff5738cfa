"""SQLite backend (the default): the async shell over :mod:`.sqlite_ops`.

Durability and isolation
    WAL journal, ``synchronous=FULL`` by default (a commit is fsynced before it is acknowledged;
    ``NORMAL`` would be faster but a power loss may drop the last commits, though never corrupt
    the file), ``BEGIN IMMEDIATE`` for every write, ``busy_timeout`` (default 5000 ms) for other
    processes' locks, foreign keys on. Readers use their own connections and WAL snapshots, so
    they never see half a write.

Checkpoints
    The writer does not checkpoint the WAL on its commits (SQLite's default does, every 1000
    pages, inside a commit: a 10-30 ms stall for whoever waits on that commit). A background
    task (:meth:`SqliteDatabase.run_checkpoints`) runs a ``PASSIVE`` checkpoint on its own
    connection once enough write transactions piled up; writers go on appending to the WAL
    meanwhile. "Enough" adapts to the writes' size: the first checkpoint comes after
    ``CHECKPOINT_EVERY_WRITES`` transactions, and each later interval is set from the frames
    the last one found, aiming at ``CHECKPOINT_TARGET_FRAMES`` (about 4 MB of WAL) per
    checkpoint, within [``CHECKPOINT_MIN_WRITES``, ``CHECKPOINT_MAX_WRITES``]. A checkpoint
    costs about the same (two fsyncs) whatever it copies, and each one slows the commit that
    overlaps it: small one-row commits (one caller at a time) are checkpointed every few
    hundred transactions instead of every 50, so far fewer calls meet one; large batched
    commits still every few dozen, so no checkpoint has many megabytes to copy and sync.
    The checkpoints run on their own thread at the lowest CPU priority (nice 19, Linux): on a
    busy core a checkpoint's CPU work (copying pages) waits for the event loop and the writer
    instead of delaying the calls it overlaps; it still gets a share, so it never starves.
    The writer keeps a far larger auto-checkpoint as a safety net should that task ever
    fall behind.

    A background pass never leaves the WAL wholly copied under steady writes (the commits that
    overlap it add frames), and SQLite starts a WAL over only when it is. So each pass is
    followed by a catch-up on the writer's own thread (:meth:`SqliteDatabase._catch_up`): it
    copies the few frames written meanwhile, between two writes, and the next write starts the
    WAL at its first frame. Without it the WAL grew to the safety net's 80 MB under load, every
    commit appended to it (an fsync that extends a file costs about twice one that does not,
    on ext4 here), and the interval, computed from a WAL that never shrank, fell to
    ``CHECKPOINT_MIN_WRITES``.

Threads
    ONE writer connection, living on its own thread (:class:`~.serial_thread.SerialThread`):
    writes run one at a time in arrival order, handed over with a queue put (a ``to_thread``
    call behind a one-slot limiter cost about 150 us more per write, a third of a governed
    call's latency at c=1). A small pool of ``query_only`` reader connections serves reads
    through ``trio.to_thread``. Writes are never abandoned on cancellation: a cancelled caller
    waits for its statement to finish, so each write is committed whole or rolled back, its
    outcome observable afterwards with a read, and the connection is clean for the next caller.
    :meth:`SqliteDatabase.write_here` skips the hand-off when the writer's thread is idle, for a
    caller content to hold the event loop for one commit (the audit log's lone calls).
"""

from __future__ import annotations

import builtins
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from northstar.common.errors import StoreUnavailable

from . import sqlite_ops as ops
from .audit_chain import AuditRow, ChainVerifier, PreparedRecord, TenantHeads
from .audit_seal import Anchor, AuditSeal
from .core import (
    check_changes_args,
    check_get_args,
    check_key,
    check_list_args,
    check_save_args,
    encode_data,
)
from .records import AuditEntry, ChangeEvent, Record, VerifyReport
from .serial_thread import SerialThread
from .sqlite_schema import migrate

T = TypeVar("T")
log = logging.getLogger("northstar.storage.sqlite")
CHECKPOINT_EVERY_WRITES = 50  # before the first checkpoint: write transactions per checkpoint
CHECKPOINT_TARGET_FRAMES = 1000  # WAL frames (pages) a checkpoint should find: ~4 MB
CHECKPOINT_MIN_WRITES = 10
CHECKPOINT_MAX_WRITES = 500
CHECKPOINT_NICE = 19  # the checkpointer's thread yields the core to the event loop and the writer
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def next_checkpoint_every(frames: int, writes: int, current: int) -> int:
    """Write transactions until the next checkpoint, so that it finds about the target frames.

    ``frames`` is the WAL's size the last checkpoint found, ``writes`` the transactions that
    made it. Without a usable measurement the interval stays as it was.
    """
    if frames <= 0 or writes <= 0:
        return current
    per_write = frames / writes
    return max(CHECKPOINT_MIN_WRITES, min(CHECKPOINT_MAX_WRITES, round(CHECKPOINT_TARGET_FRAMES / per_write)))


class SqliteDatabase:
    """The connections of one SQLite file: one writer, ``readers`` readers."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000, readers: int = 4,
                 synchronous: str = "FULL") -> None:
        if str(path) in ("", ":memory:") or str(path).startswith("file:"):
            raise ValueError("SQLite needs a file path (in-memory databases cannot share WAL readers)")
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        if readers < 1 or busy_timeout_ms < 0:
            raise ValueError("readers must be >= 1 and busy_timeout_ms >= 0")
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous.upper()
        self._n_readers = readers
        self._writer: Any = None
        self._readers: builtins.list[Any] = []
        self._write_thread: SerialThread | None = None
        self._read_limiter = trio.CapacityLimiter(readers)
        self._closed = False
        self._writes = 0  # write transactions since the last checkpoint started
        self.checkpoint_every = CHECKPOINT_EVERY_WRITES  # adapted after each checkpoint
        self._checkpoint_due = trio.Event()
        self.checkpoints = 0
        self.wal_restarts = 0  # catch-ups that left the WAL wholly copied (its next write starts it over)
        self._wal_base = 0  # the WAL's frames after the last catch-up (0: it starts over)
        self.checkpointed = trio.Event()  # set (and replaced) after each background checkpoint

    async def open(self) -> None:
        """Create the file if needed, switch to WAL, migrate, open the readers."""
        await trio.to_thread.run_sync(ops.mapped, self._open_sync)
        self._write_thread = SerialThread(f"northstar-sqlite-writer:{self.path.name}")

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path.parent}: {exc}", retry_after=1) from exc
        path, busy, sync = str(self.path), self._busy_timeout_ms, self._synchronous
        self._writer = ops.connect(path, busy_timeout_ms=busy, synchronous=sync, readonly=False)
        try:
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {ops.WRITER_AUTOCHECKPOINT_PAGES}")
            migrate(self._writer)
            for _ in range(self._n_readers):
                self._readers.append(ops.connect(path, busy_timeout_ms=busy, synchronous=sync, readonly=True))
        except BaseException:
            self._close_sync()
            raise

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(writer, *args)`` on the writer thread, one at a time; never abandoned on cancel."""
        self._check_open()
        assert self._write_thread is not None
        try:
            return await self._write_thread.run(ops.mapped, fn, self._writer, *args)
        finally:
            self._writes += 1
            if self._writes >= self.checkpoint_every:
                self._checkpoint_due.set()

    def write_here(self, fn: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
        """``fn(writer, *args)`` on the calling (trio) thread when the writer's thread is idle.

        ``(True, result)``; ``(False, None)`` when a write is queued or running (then use
        :meth:`write`). The event loop waits for the statement and its fsync meanwhile: for
        callers that have nothing else to let run (the audit log's lone commits).
        """
        self._check_open()
        assert self._write_thread is not None
        if not self._write_thread.idle:
            return False, None
        try:
            return True, self._write_thread.run_here(ops.mapped, fn, self._writer, *args)
        finally:
            self._writes += 1
            if self._writes >= self.checkpoint_every:
                self._checkpoint_due.set()

    async def run_checkpoints(self) -> None:
        """Checkpoint the WAL off the commit path, whenever enough writes piled up; runs until cancelled.

        Never fails the store: a connection that cannot be opened or a checkpoint that fails
        is logged and tried again at the next round (the writer's own auto-checkpoint is the
        safety net meanwhile).
        """
        path, busy, sync = str(self.path), self._busy_timeout_ms, self._synchronous
        conn: Any = None
        worker = SerialThread(f"northstar-sqlite-checkpointer:{self.path.name}", nice=CHECKPOINT_NICE)
        try:
            while True:
                await self._checkpoint_due.wait()
                self._checkpoint_due = trio.Event()
                try:
                    if conn is None:
                        conn = await worker.run(
                            ops.mapped, lambda: ops.connect(path, busy_timeout_ms=busy, synchronous=sync,
                                                            readonly=False)
                        )
                    writes, self._writes = self._writes, 0
                    _busy, frames, _done = await worker.run(ops.mapped, ops.checkpoint, conn)
                    grown = frames - self._wal_base if frames >= self._wal_base else frames
                    self.checkpoint_every = next_checkpoint_every(grown, writes, self.checkpoint_every)
                    self._wal_base = await self._catch_up()
                    self.checkpoints += 1
                    self.checkpointed.set()
                    self.checkpointed = trio.Event()
                except (StoreUnavailable, sqlite3.Error) as exc:  # the next round (or the safety net) retries
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            try:
                if conn is not None:
                    with trio.CancelScope(shield=True):
                        await worker.run(conn.close)
            finally:
                worker.stop()

    async def _catch_up(self) -> int:
        """Copy what the writes made during the background pass, between two writes; the WAL's size.

        Run on the writer's thread, so no write lands between it and the next one: the WAL is
        then wholly in the database, and SQLite starts the next write at the WAL's first frame,
        rewriting the file in place instead of appending to it. That keeps the WAL at about one
        interval's frames, and an fsync that extends no file costs about half of one that
        does (ext4 here: 110 against 250 us). Answers 0 when it left nothing behind, else the
        WAL's frames (a reader still on an older snapshot keeps the WAL from starting over).
        """
        if self._closed or self._write_thread is None:
            return 0
        busy, frames, done = await self._write_thread.run(ops.mapped, self._checkpoint_writer)
        if not busy and done == frames:  # (0, 0, 0) too: an empty WAL
            self.wal_restarts += 1
            return 0
        return int(frames)

    def _checkpoint_writer(self) -> tuple[int, int, int]:
        if self._writer is None:  # closed meanwhile: nothing to copy from here
            return 0, 0, 0
        return ops.checkpoint(self._writer)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(reader, *args)`` in a thread on a free reader connection."""
        self._check_open()
        async with self._read_limiter:
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(ops.mapped, fn, conn, *args)
            finally:
                self._readers.append(conn)

    def _check_open(self) -> None:
        if self._closed or self._writer is None or self._write_thread is None:
            raise StoreUnavailable("the SQLite store is closed", retry_after=1)

    async def close(self) -> None:
        """Wait for in-flight statements (they are never abandoned), then close every connection."""
        if self._closed:
            return
        self._closed = True
        tokens = [object() for _ in range(self._n_readers)]
        for token in tokens:
            await self._read_limiter.acquire_on_behalf_of(token)
        try:
            if self._write_thread is not None:  # after the writes queued before it
                with trio.CancelScope(shield=True):
                    await self._write_thread.run(self._close_sync)
            else:
                await trio.to_thread.run_sync(self._close_sync)
        finally:
            if self._write_thread is not None:
                self._write_thread.stop()
        for token in tokens:
            self._read_limiter.release_on_behalf_of(token)

    def _close_sync(self) -> None:
        for conn in [*self._readers, self._writer]:
            if conn is not None:
                conn.close()
        self._readers.clear()
        self._writer = None


class SqliteStore:
    """:class:`~northstar.storage.base.VersionedStore` on SQLite."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def save(self, tenant: str, kind: str, resource_id: str, data: dict[str, Any] | None, *,
                   expected_version: int | None = None, actor: str | None = None) -> Record:
        check_save_args(tenant, kind, resource_id, expected_version, actor)
        text = encode_data(data)
        return await self.db.write(ops.save, tenant, kind, resource_id, text, expected_version, actor)

    async def get(self, tenant: str, kind: str, resource_id: str,
                  version: int | None = None) -> Record | None:
        check_get_args(tenant, kind, resource_id, version)
        return await self.db.read(ops.get, tenant, kind, resource_id, version)

    async def list(self, tenant: str, kind: str, *, prefix: str | None = None, after: str | None = None,
                   limit: int = 100, include_deleted: bool = False) -> builtins.list[Record]:
        limit = check_list_args(tenant, kind, prefix, after, limit)
        return await self.db.read(ops.list_latest, tenant, kind, prefix, after, limit, include_deleted)

    async def history(self, tenant: str, kind: str, resource_id: str) -> builtins.list[Record]:
        check_key(tenant, kind, resource_id)
        return await self.db.read(ops.history, tenant, kind, resource_id)

    async def changes_since(self, change_id: int, kinds: Sequence[str] | None = None,
                            limit: int = 1000) -> builtins.list[ChangeEvent]:
        limit = check_changes_args(change_id, kinds, limit)
        kinds = None if kinds is None else builtins.list(kinds)
        return await self.db.read(ops.changes_since, int(change_id), kinds, limit)

    async def check(self) -> None:
        await self.db.read(ops.check)

    async def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` when the file is sound."""
        return await self.db.read(ops.integrity_check)

    async def close(self) -> None:
        await self.db.close()

    async def maintain(self) -> None:
        """Background upkeep while the store is open (WAL checkpoints); runs until cancelled."""
        await self.db.run_checkpoints()


class SqliteAuditIO:
    """The audit backend for :class:`~northstar.storage.audit.GroupCommitAuditLog` on SQLite."""

    def __init__(self, db: SqliteDatabase, seal: AuditSeal | None = None) -> None:
        self.db = db
        self.seal = seal
        self._tenant_heads = TenantHeads()  # used on the writer thread only

    async def register_seal(self) -> None:
        await self.db.write(ops.audit_register_seal, self.seal)

    async def write_batch(self, batch: builtins.list[PreparedRecord]) -> builtins.list[AuditRow]:
        return await self.db.write(ops.audit_write, batch, self.seal, self._tenant_heads)

    def write_batch_here(self, batch: builtins.list[PreparedRecord]) -> builtins.list[AuditRow] | None:
        """:meth:`write_batch` on the calling thread, or None when the writer's thread is busy."""
        done, rows = self.db.write_here(ops.audit_write, batch, self.seal, self._tenant_heads)
        return rows if done else None

    async def write_anchor(self, anchor: Anchor) -> None:
        await self.db.write(ops.audit_write_anchor, anchor)

    async def query(self, filters: dict[str, Any], after_seq: int | None,
                    limit: int, by_tenant_seq: bool = False) -> builtins.list[AuditEntry]:
        return await self.db.read(ops.audit_query, filters, after_seq, limit, by_tenant_seq)

    async def get(self, seq: int) -> AuditEntry | None:
        return await self.db.read(ops.audit_get, int(seq))

    async def head_seq(self) -> int:
        return await self.db.read(ops.audit_head_seq)

    async def verify(self, tenant: str | None, anchors: Sequence[Anchor] = ()) -> VerifyReport:
        verifier = ChainVerifier(tenant, key=None if self.seal is None else self.seal.key, tenant_seqs=True)
        verifier.add_anchors(anchors)
        return await self.db.read(ops.audit_verify, verifier)
