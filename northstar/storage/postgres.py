"""PostgreSQL backend: asyncpg (asyncio-only) driven from trio through trio-asyncio.

Every call crosses with ``trio_asyncio.aio_as_trio``, so the caller MUST run inside
``async with trio_asyncio.open_loop():`` opened around everything that uses the store (at the
root of the application, or in a test fixture); :func:`open_postgres` raises a clear
``RuntimeError`` when no such loop is open.

Writes (saves and audit batches) are shielded from trio cancellation and bounded by the
command timeout instead, like the SQLite worker threads: a cancelled caller waits for the
commit or rollback, so the outcome is decided and observable with a read. Failures to reach
or use the server (refused or lost connections, timeouts, server shutdown, full disk, too many
connections, read-only replica) become ``StoreUnavailable(retry_after=1)``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import asyncpg
import trio
import trio_asyncio

from northstar.common.errors import StoreUnavailable

from . import pg_ops as ops
from .audit_chain import AuditRow, ChainVerifier, PreparedRecord, TenantHeads
from .audit_seal import Anchor, AuditSeal
from .changes import CHANNEL, ChangeBell, parse_payload
from .core import (
    check_changes_args,
    check_get_args,
    check_key,
    check_list_args,
    check_save_args,
    encode_data,
)
from .pg_schema import migrate
from .records import AuditEntry, ChangeEvent, Record, VerifyReport

T = TypeVar("T")
log = logging.getLogger("northstar.storage")

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # e.g. a pooled connection the server terminated
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)


def require_loop() -> None:
    if trio_asyncio.current_loop.get() is None:
        raise RuntimeError(
            "the PostgreSQL store runs asyncpg through trio-asyncio: open the store inside "
            "`async with trio_asyncio.open_loop():`"
        )


class PostgresDatabase:
    """An asyncpg pool plus the trio <-> asyncio crossing and the error mapping."""

    def __init__(self, dsn: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10,
                 connect_timeout: float = 10.0, command_timeout: float = 30.0,
                 acquire_timeout: float = 10.0, save_attempts: int = 5) -> None:
        self.dsn, self.schema = dsn, schema
        self._pool_opts: dict[str, Any] = {
            "min_size": min_size, "max_size": max_size, "timeout": connect_timeout,
            "command_timeout": command_timeout,
            "server_settings": {
                "application_name": f"northstar/{schema}" if schema else "northstar",
                **({"search_path": schema} if schema else {}),
            },
        }
        self._acquire_timeout = acquire_timeout
        self._write_timeout = acquire_timeout + 2 * command_timeout
        self.save_attempts = save_attempts
        self._pool: Any = None
        self._closed = False

    async def open(self) -> None:
        """Create the pool, the schema when ``?schema=`` asked for one, and migrate."""
        require_loop()
        await self.mapped(self._open_aio)

    async def _open_aio(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, **self._pool_opts)
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                if self.schema:
                    await self._create_schema(conn)
                await migrate(conn)
        except BaseException:
            self._pool.terminate()
            raise

    async def _create_schema(self, conn: Any) -> None:
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        except asyncpg.UniqueViolationError:
            pass  # a concurrent creator won the race: the schema exists

    async def mapped(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        try:
            result: T = await trio_asyncio.aio_as_trio(fn)(*args)
            return result
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}", retry_after=1) from exc

    def connect_options(self) -> dict[str, Any]:
        """What a connection of its own (the change listener's) is opened with, as the pool's."""
        return {"timeout": self._pool_opts["timeout"], "server_settings": dict(self._pool_opts["server_settings"])}

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(pool, *args)`` on the asyncio loop."""
        if self._closed or self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is closed", retry_after=1)
        return await self.mapped(fn, self._pool, *args)

    async def write(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """As :meth:`call`, shielded from the caller's cancellation, bounded by its own deadline."""
        deadline = trio.current_time() + self._write_timeout
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            result = await self.call(fn, *args)
        if scope.cancelled_caught:
            raise StoreUnavailable("postgres: a write did not finish in time; its outcome is unknown",
                                   retry_after=1)
        return result

    async def close(self, timeout: float = 10.0) -> None:
        if self._closed or self._pool is None:
            self._closed = True
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(timeout) as scope:
            await trio_asyncio.aio_as_trio(self._pool.close)()
        if scope.cancelled_caught:
            self._pool.terminate()


class PostgresStore:
    """:class:`~northstar.storage.base.VersionedStore` on PostgreSQL."""

    def __init__(self, db: PostgresDatabase, bell: ChangeBell | None = None) -> None:
        self.db = db
        self.bell = bell

    async def maintain(self) -> None:
        """Listen for other replicas' saves (``NOTIFY``) and ring the bell; reconnect when lost."""
        if self.bell is not None:
            await ChangeListener(self.db, self.bell).run()

    async def save(self, tenant: str, kind: str, resource_id: str, data: dict[str, Any] | None, *,
                   expected_version: int | None = None, actor: str | None = None) -> Record:
        check_save_args(tenant, kind, resource_id, expected_version, actor)
        text = encode_data(data)
        return await self.db.write(
            ops.save, tenant, kind, resource_id, text, expected_version, actor, self.db.save_attempts
        )

    async def get(self, tenant: str, kind: str, resource_id: str,
                  version: int | None = None) -> Record | None:
        check_get_args(tenant, kind, resource_id, version)
        return await self.db.call(ops.get, tenant, kind, resource_id, version)

    async def list(self, tenant: str, kind: str, *, prefix: str | None = None, after: str | None = None,
                   limit: int = 100, include_deleted: bool = False) -> builtins.list[Record]:
        limit = check_list_args(tenant, kind, prefix, after, limit)
        return await self.db.call(ops.list_latest, tenant, kind, prefix, after, limit, include_deleted)

    async def history(self, tenant: str, kind: str, resource_id: str) -> builtins.list[Record]:
        check_key(tenant, kind, resource_id)
        return await self.db.call(ops.history, tenant, kind, resource_id)

    async def changes_since(self, change_id: int, kinds: Sequence[str] | None = None,
                            limit: int = 1000) -> builtins.list[ChangeEvent]:
        limit = check_changes_args(change_id, kinds, limit)
        kinds = None if kinds is None else builtins.list(kinds)
        return await self.db.call(ops.changes_since, int(change_id), kinds, limit)

    async def check(self) -> None:
        await self.db.call(ops.check)

    async def close(self) -> None:
        await self.db.close()


#: Expected ways to lose the listener (logged once per loss); anything else is logged each time.
LISTENER_LOST: tuple[type[BaseException], ...] = (StoreUnavailable, trio.TooSlowError, *UNAVAILABLE)


class ChangeListener:
    """One connection of its own, ``LISTEN northstar_changes``: each notification for this
    store's schema rings the bell. Checked every ``ping_s``; when lost, reconnected with a
    backoff, and every watcher is rung once (notifications sent meanwhile were missed)."""

    def __init__(self, db: PostgresDatabase, bell: ChangeBell, *, ping_s: float = 5.0) -> None:
        self.db, self.bell, self.ping_s = db, bell, ping_s
        self.schema: str | None = None

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._listen()
            except Exception as exc:  # an accelerator: any failure falls back to polling, then retries
                if self.bell.connected or not isinstance(exc, LISTENER_LOST):
                    log.warning("change listener lost; polling until it is back", extra={"error": str(exc)})
                if self.bell.connected:
                    delay = 0.5  # it worked until now: the first retry comes soon
                self.bell.connected = False
            await trio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _listen(self) -> None:
        token = trio.lowlevel.current_trio_token()

        def on_notify(_conn: Any, _pid: int, _channel: str, text: str) -> None:
            parsed = parse_payload(text)
            if parsed is not None and parsed[0] == self.schema:
                token.run_sync_soon(self.bell.ring, parsed[1])

        # Setting up and each ping run shielded (bounded by the connect and command timeouts):
        # cancelling asyncpg halfway through leaves an asyncio future failing with nobody to
        # retrieve it, which trio-asyncio raises into its loop. Only the sleeps are cancelled.
        lost = trio.Event()

        def on_lost(_conn: Any) -> None:
            token.run_sync_soon(lost.set)

        with trio.CancelScope(shield=True):
            conn = await self.db.mapped(self._setup, on_notify, on_lost)
        try:
            self.bell.connected = True
            self.bell.ring(None)  # anything committed while we were not listening
            while True:
                with trio.move_on_after(self.ping_s):  # the server ended it, or time to check
                    await lost.wait()
                if lost.is_set():
                    raise StoreUnavailable("postgres: the change listener's connection was lost", retry_after=1)
                with trio.CancelScope(shield=True), trio.fail_after(self.ping_s):
                    await self.db.mapped(conn.fetchval, "SELECT 1")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await trio_asyncio.aio_as_trio(conn.close)()
                except Exception:
                    conn.terminate()

    async def _setup(self, on_notify: Callable[..., None], on_lost: Callable[[Any], None]) -> Any:
        """(asyncio) A connection of its own, listening; closed again if setting up fails."""
        conn = await asyncpg.connect(self.db.dsn, **self.db.connect_options())
        try:
            self.schema = await conn.fetchval("SELECT current_schema()")
            await conn.add_listener(CHANNEL, on_notify)
            conn.add_termination_listener(on_lost)
        except BaseException:
            conn.terminate()
            raise
        return conn


class PostgresAuditIO:
    """The audit backend for :class:`~northstar.storage.audit.GroupCommitAuditLog` on PostgreSQL."""

    def __init__(self, db: PostgresDatabase, seal: AuditSeal | None = None) -> None:
        self.db = db
        self.seal = seal
        self._tenant_heads = TenantHeads()  # one flusher: one batch at a time

    async def register_seal(self) -> None:
        await self.db.write(ops.audit_register_seal, self.seal)

    async def write_batch(self, batch: builtins.list[PreparedRecord]) -> builtins.list[AuditRow]:
        return await self.db.write(ops.audit_write, batch, self.seal, self._tenant_heads)

    async def write_anchor(self, anchor: Anchor) -> None:
        await self.db.write(ops.audit_write_anchor, anchor)

    async def query(self, filters: dict[str, Any], after_seq: int | None,
                    limit: int, by_tenant_seq: bool = False) -> builtins.list[AuditEntry]:
        return await self.db.call(ops.audit_query, filters, after_seq, limit, by_tenant_seq)

    async def get(self, seq: int) -> AuditEntry | None:
        return await self.db.call(ops.audit_get, int(seq))

    async def head_seq(self) -> int:
        return await self.db.call(ops.audit_head_seq)

    async def verify(self, tenant: str | None, anchors: Sequence[Anchor] = ()) -> VerifyReport:
        verifier = ChainVerifier(tenant, key=None if self.seal is None else self.seal.key, tenant_seqs=True)
        verifier.add_anchors(anchors)
        return await self.db.call(ops.audit_verify, verifier)
