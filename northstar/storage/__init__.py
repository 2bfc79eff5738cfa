"""Durable storage: a versioned document store and a hash-chained audit log, on SQLite or PostgreSQL.

    async with open_store("sqlite:///data/northstar.db") as storage:
        record = await storage.store.save("acme", "workbench_drafts", "d1", {"x": 1})
        entry = await storage.audit.append({"tenant": "acme", "tool": "t", "decision": "allow"})

URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://user@host:port/db``
(or ``postgres://``) with an optional ``?schema=NAME``. PostgreSQL needs the caller to run inside
``async with trio_asyncio.open_loop():``.

Options (keyword arguments of :func:`open_store`):
    SQLite        ``busy_timeout_ms`` (5000), ``readers`` (4), ``synchronous`` ("FULL")
    PostgreSQL    ``min_size`` (1), ``max_size`` (10), ``connect_timeout`` (10 s),
                  ``command_timeout`` (30 s), ``acquire_timeout`` (10 s), ``save_attempts`` (5)
    audit log     ``audit_max_pending`` (1024), ``audit_max_batch`` (256),
                  ``audit_queue_timeout`` (5 s), ``audit_commit_timeout`` (30 s),
                  ``audit_seal`` (an :class:`AuditSeal`: the key and anchoring; see
                  :mod:`.audit_seal`. A store sealed once refuses to open without its key)
    both          ``shutdown_timeout`` (10 s): how long closing waits for queued audit records
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .audit import AuditIO, AuditStats, GroupCommitAuditLog
from .audit_seal import AuditSeal, AuditSealBroken, AuditSealError, open_seal
from .base import AuditLog, VersionedStore
from .changes import ChangeBell
from .records import AuditEntry, ChangeEvent, Record, VerifyReport
from .urls import StoreURL, parse_store_url

if TYPE_CHECKING:
    from northstar.common.config import Settings

__all__ = [
    "AuditEntry",
    "AuditLog",
    "AuditSeal",
    "AuditSealBroken",
    "AuditSealError",
    "AuditStats",
    "ChangeBell",
    "ChangeEvent",
    "GroupCommitAuditLog",
    "Record",
    "Storage",
    "StoreURL",
    "VerifyReport",
    "VersionedStore",
    "open_seal",
    "open_store",
    "options_for",
    "parse_store_url",
]


@dataclass(frozen=True, slots=True)
class Storage:
    """What :func:`open_store` yields: the store, the audit log (its flusher running), the backend."""

    store: Any  # a VersionedStore: SqliteStore (with integrity_check) or PostgresStore
    audit: GroupCommitAuditLog
    backend: str
    #: Rung when another replica saved (PostgreSQL LISTEN/NOTIFY); watchers poll at once.
    changes: ChangeBell = field(default_factory=ChangeBell)


async def _open_backend(url: StoreURL, opts: dict[str, Any], seal: AuditSeal | None,
                        bell: ChangeBell) -> tuple[Any, AuditIO]:
    if url.backend == "sqlite":
        from .sqlite import SqliteAuditIO, SqliteDatabase, SqliteStore

        assert url.path is not None
        sdb = SqliteDatabase(url.path, **opts)
        await sdb.open()
        return SqliteStore(sdb), SqliteAuditIO(sdb, seal)
    from .postgres import PostgresAuditIO, PostgresDatabase, PostgresStore, require_loop

    require_loop()
    assert url.dsn is not None
    pdb = PostgresDatabase(url.dsn, schema=url.schema, **opts)
    await pdb.open()
    return PostgresStore(pdb, bell), PostgresAuditIO(pdb, seal)


def _split_opts(opts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], float]:
    audit = {key.removeprefix("audit_"): opts.pop(key) for key in list(opts) if key.startswith("audit_")}
    return opts, audit, float(opts.pop("shutdown_timeout", 10.0))


async def _run_within(scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()


@asynccontextmanager
async def open_store(url: str, **opts: Any) -> AsyncIterator[Storage]:
    """Open the store at ``url``, migrate it, run the audit flusher; flush and close on exit.

    Raises ``ValueError`` for a malformed URL or unknown scheme, ``TypeError`` for an unknown
    option, ``StoreUnavailable`` when the database cannot be opened, ``AuditSealError`` when its
    audit log is sealed with another key (or with one and none was given).
    """
    parsed = parse_store_url(url)
    backend_opts, audit_opts, shutdown_timeout = _split_opts(dict(opts))
    seal = audit_opts.get("seal")
    bell = ChangeBell()
    store, io = await _open_backend(parsed, backend_opts, seal, bell)
    try:
        await io.register_seal()
        audit = GroupCommitAuditLog(io, **audit_opts)
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run)
            await nursery.start(audit.run_anchors)
            upkeep = trio.CancelScope()
            maintain = getattr(store, "maintain", None)
            if maintain is not None:
                nursery.start_soon(_run_within, upkeep, maintain)
            try:
                yield Storage(store=store, audit=audit, backend=parsed.backend, changes=bell)
            finally:
                # Drain what is queued even when we are being cancelled, within the deadline.
                upkeep.cancel()
                audit.shutdown()
                nursery.cancel_scope.shield = True
                nursery.cancel_scope.deadline = trio.current_time() + shutdown_timeout
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(shutdown_timeout):
            await store.close()


def options_for(settings: Settings) -> dict[str, Any]:
    """:func:`open_store` options from the gateway settings (each backend takes only its own),
    the audit seal included. Opening the seal creates the audit key file on first use."""
    seal = open_seal(settings.audit_key_file or settings.data_dir / "audit.key",
                     settings.audit_anchor_file or settings.data_dir / "audit.anchors",
                     anchor_every=settings.audit_anchor_every, anchor_interval_s=settings.audit_anchor_interval_s)
    if settings.resolved_store_url().startswith("sqlite:"):
        return {"busy_timeout_ms": settings.sqlite_busy_timeout_ms, "audit_seal": seal}
    return {"audit_seal": seal}
