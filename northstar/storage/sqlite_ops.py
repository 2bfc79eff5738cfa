"""Synchronous SQLite operations, each run whole in a worker thread by :mod:`.sqlite`.

Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the single writer connection, rolled
back on any failure so the connection is clean for the next caller. SQLite errors are mapped
here, in the thread, to the northstar hierarchy: busy / locked past ``busy_timeout``, I/O
errors, a full disk, an unopenable or corrupt file -> ``StoreUnavailable(retry_after=1)``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from northstar.common.errors import StoreUnavailable

from .audit_chain import (
    AuditRow,
    ChainVerifier,
    PreparedRecord,
    StoredRow,
    TenantHeads,
    build_rows,
    tenants_of,
)
from .audit_seal import Anchor, AuditSeal, AuditSealError, check_head, registration_problem
from .core import conflict, decode_data, next_version, utc_now_iso
from .records import AuditEntry, ChangeEvent, Record, VerifyReport

T = TypeVar("T")

RECORD_COLUMNS = "r.tenant, r.kind, r.resource_id, r.version, r.data, r.created_at, r.actor, r.change_id"
AUDIT_COLUMNS = "seq, ts, record, prev_hash, hash, tenant_seq"
#: The writer's own auto-checkpoint: only a safety net behind the background checkpointer.
WRITER_AUTOCHECKPOINT_PAGES = 20_000


def _journal_mode_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> str:
    """``PRAGMA journal_mode = WAL``, retried while another process holds the file.

    SQLite answers "database is locked" to it at once, without the busy handler, while
    another connection is opening or closing the WAL (e.g. several gateways or a CLI command
    starting together); retrying for up to ``busy_timeout_ms`` is what the busy handler would
    have done. This runs in a worker thread, never on the event loop.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def connect(path: str, *, busy_timeout_ms: int, synchronous: str, readonly: bool) -> sqlite3.Connection:
    """Open one connection in autocommit mode (we issue BEGIN/COMMIT ourselves)."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        else:
            mode = _journal_mode_wal(conn, busy_timeout_ms)
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"could not switch {path} to WAL mode", retry_after=1)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def mapped(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` translating SQLite's operational failures into ``StoreUnavailable``."""
    try:
        return fn(*args)
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except sqlite3.DatabaseError as exc:  # OperationalError and "file is not a database" alike
        raise StoreUnavailable(f"sqlite: {exc}", retry_after=1) from exc


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """A PASSIVE checkpoint: copy what it can from the WAL into the database, blocking no one."""
    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(done)


@contextlib.contextmanager
def write_tx(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _record(row: Sequence[Any]) -> Record:
    return Record(row[0], row[1], row[2], row[3], decode_data(row[4]), row[5], row[6], row[7])


def _current_version(conn: sqlite3.Connection, tenant: str, kind: str, resource_id: str) -> int:
    row = conn.execute(
        "SELECT version FROM resource_heads WHERE tenant = ? AND kind = ? AND resource_id = ?",
        (tenant, kind, resource_id),
    ).fetchone()
    return int(row[0]) if row else 0


def save(conn: sqlite3.Connection, tenant: str, kind: str, resource_id: str, text: str | None,
         expected: int | None, actor: str | None) -> Record:
    try:
        with write_tx(conn):
            version = next_version(_current_version(conn, tenant, kind, resource_id), expected)
            created_at = utc_now_iso()
            cur = conn.execute(
                "INSERT INTO records (tenant, kind, resource_id, version, data, created_at, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, kind, resource_id, version, text, created_at, actor),
            )
            change_id = int(cur.lastrowid or 0)
            conn.execute(
                "INSERT INTO resource_heads (tenant, kind, resource_id, version, change_id, deleted)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, kind, resource_id) DO UPDATE SET"
                " version = excluded.version, change_id = excluded.change_id, deleted = excluded.deleted",
                (tenant, kind, resource_id, version, change_id, int(text is None)),
            )
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" not in str(exc):
            raise
        raise conflict(_current_version(conn, tenant, kind, resource_id), expected) from exc
    return Record(tenant, kind, resource_id, version, decode_data(text), created_at, actor, change_id)


def get(conn: sqlite3.Connection, tenant: str, kind: str, resource_id: str,
        version: int | None) -> Record | None:
    if version is None:
        row = conn.execute(
            f"SELECT {RECORD_COLUMNS} FROM resource_heads h JOIN records r ON r.change_id = h.change_id"
            " WHERE h.tenant = ? AND h.kind = ? AND h.resource_id = ?",
            (tenant, kind, resource_id),
        ).fetchone()
    else:
        row = conn.execute(
            f"SELECT {RECORD_COLUMNS} FROM records r"
            " WHERE r.tenant = ? AND r.kind = ? AND r.resource_id = ? AND r.version = ?",
            (tenant, kind, resource_id, version),
        ).fetchone()
    return _record(row) if row else None


def list_latest(conn: sqlite3.Connection, tenant: str, kind: str, prefix: str | None, after: str | None,
                limit: int, include_deleted: bool) -> list[Record]:
    sql = [f"SELECT {RECORD_COLUMNS} FROM resource_heads h JOIN records r ON r.change_id = h.change_id"
           " WHERE h.tenant = ? AND h.kind = ?"]
    args: list[Any] = [tenant, kind]
    if prefix:
        # ">=" lets the primary key range-scan; substr() makes the match exact (LIKE folds case).
        sql.append("AND h.resource_id >= ? AND substr(h.resource_id, 1, length(?)) = ?")
        args += [prefix, prefix, prefix]
    if after is not None:
        sql.append("AND h.resource_id > ?")
        args.append(after)
    if not include_deleted:
        sql.append("AND h.deleted = 0")
    sql.append("ORDER BY h.resource_id LIMIT ?")
    args.append(limit)
    return [_record(row) for row in conn.execute(" ".join(sql), args)]


def history(conn: sqlite3.Connection, tenant: str, kind: str, resource_id: str) -> list[Record]:
    rows = conn.execute(
        f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.tenant = ? AND r.kind = ? AND r.resource_id = ?"
        " ORDER BY r.version",
        (tenant, kind, resource_id),
    )
    return [_record(row) for row in rows]


def changes_since(conn: sqlite3.Connection, change_id: int, kinds: Sequence[str] | None,
                  limit: int) -> list[ChangeEvent]:
    sql = "SELECT change_id, tenant, kind, resource_id, version FROM records WHERE change_id > ?"
    args: list[Any] = [change_id]
    if kinds is not None:
        sql += f" AND kind IN ({', '.join('?' for _ in kinds)})"
        args += list(kinds)
    sql += " ORDER BY change_id LIMIT ?"
    args.append(limit)
    return [ChangeEvent(*row) for row in conn.execute(sql, args)]


def check(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT count(*) FROM schema_migrations").fetchone()


def integrity_check(conn: sqlite3.Connection) -> str:
    return "\n".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))


# -- audit log ------------------------------------------------------------------------------------


def _tenant_head(conn: sqlite3.Connection, tenant: str) -> int:
    row = conn.execute("SELECT max(tenant_seq) FROM audit_log WHERE tenant = ?", (tenant,)).fetchone()
    return int(row[0] or 0)


def audit_write(conn: sqlite3.Connection, batch: list[PreparedRecord], seal: AuditSeal | None,
                cache: TenantHeads) -> list[AuditRow]:
    """Chain and insert one batch in one transaction (the group commit), moving the sealed head."""
    try:
        return _audit_write(conn, batch, seal, cache)
    except BaseException:
        cache.forget()  # the outcome is unknown: probe again next time
        raise


def _audit_write(conn: sqlite3.Connection, batch: list[PreparedRecord], seal: AuditSeal | None,
                 cache: TenantHeads) -> list[AuditRow]:
    with write_tx(conn):
        head_seq, head_hash, head_mac = conn.execute("SELECT seq, hash, mac FROM audit_head WHERE id = 1").fetchone()
        check_head(seal, int(head_seq), str(head_hash), head_mac)
        heads, missing = cache.known(int(head_seq), tenants_of(batch))
        heads.update((t, _tenant_head(conn, t)) for t in missing)
        rows = build_rows(batch, int(head_seq), str(head_hash), utc_now_iso(), heads)
        conn.executemany(
            "INSERT INTO audit_log (seq, ts, tenant, user_id, tool, operation, decision, request_id,"
            " sandbox, record, prev_hash, hash, tenant_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.seq, r.ts, *r.columns, r.text, r.prev_hash, r.hash, r.tenant_seq) for r in rows],
        )
        last = rows[-1]
        mac = None if seal is None else seal.head_mac(last.seq, last.hash)
        conn.execute("UPDATE audit_head SET seq = ?, hash = ?, mac = ? WHERE id = 1", (last.seq, last.hash, mac))
    cache.committed(last.seq, heads)
    return rows


def audit_register_seal(conn: sqlite3.Connection, seal: AuditSeal | None) -> None:
    """Register ``seal``'s key on a store that has none (sealing the head as it stands), or refuse."""
    with write_tx(conn):
        row = conn.execute("SELECT key_id FROM audit_seal WHERE id = 1").fetchone()
        problem = registration_problem(row[0] if row else None, seal)
        if problem is not None:
            if seal is not None:
                seal.discard_new_key()  # it sealed nothing: leave no stray key behind
            raise AuditSealError(problem)
        if row is None and seal is not None:
            head_seq, head_hash = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            conn.execute("INSERT INTO audit_seal (id, key_id, sealed_at, sealed_seq) VALUES (1, ?, ?, ?)",
                         (seal.key_id, utc_now_iso(), head_seq))
            conn.execute("UPDATE audit_head SET mac = ? WHERE id = 1", (seal.head_mac(head_seq, head_hash),))


def audit_write_anchor(conn: sqlite3.Connection, anchor: Anchor) -> None:
    with write_tx(conn):
        conn.execute("INSERT INTO audit_anchors (seq, hash, ts, key_id, mac) VALUES (?, ?, ?, ?, ?)",
                     (anchor.seq, anchor.hash, anchor.ts, anchor.key_id, anchor.mac))


def _entry(row: Sequence[Any]) -> AuditEntry:
    return AuditRow(row[0], row[1], row[2], row[3], row[4], decode_data(row[2]) or {}, row[5]).to_entry()


def audit_query(conn: sqlite3.Connection, filters: dict[str, Any], after_seq: int | None,
                limit: int, by_tenant_seq: bool = False) -> list[AuditEntry]:
    """``filters`` maps column -> value; ``ts_from`` / ``ts_to`` bound ``ts`` (from inclusive).

    ``by_tenant_seq`` orders and pages by ``tenant_seq`` (``after_seq`` is one) instead of ``seq``.
    """
    clauses, args = [], []
    for column, value in filters.items():
        if value is None:
            continue
        if column == "ts_from":
            clauses.append("ts >= ?")
        elif column == "ts_to":
            clauses.append("ts < ?")
        else:
            clauses.append(f"{column} = ?")
        args.append(value)
    order = "tenant_seq" if by_tenant_seq else "seq"
    if after_seq is not None:
        clauses.append(f"{order} > ?")
        args.append(after_seq)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log {where} ORDER BY {order} LIMIT ?", [*args, limit])
    return [_entry(row) for row in rows]


def audit_head_seq(conn: sqlite3.Connection) -> int:
    """The seq of the newest committed entry (0: none yet)."""
    row = conn.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def audit_get(conn: sqlite3.Connection, seq: int) -> AuditEntry | None:
    row = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq = ?", (seq,)).fetchone()
    return _entry(row) if row else None


def audit_verify(conn: sqlite3.Connection, verifier: ChainVerifier) -> VerifyReport:
    """Walk the whole chain inside one read transaction (one WAL snapshot)."""
    conn.execute("BEGIN")
    try:
        head = conn.execute("SELECT seq, hash, mac FROM audit_head WHERE id = 1").fetchone()
        verifier.add_anchors(Anchor(*row) for row in conn.execute(
            "SELECT seq, hash, ts, key_id, mac FROM audit_anchors ORDER BY id"))
        with contextlib.closing(conn.execute(
            "SELECT seq, ts, record, prev_hash, hash, tenant, user_id, tool, operation, decision,"
            " request_id, sandbox, tenant_seq FROM audit_log ORDER BY seq"
        )) as rows:
            for row in rows:
                stored = StoredRow(row[0], row[1], row[2], row[3], row[4], (*row[5:11], bool(row[11])), row[12])
                if not verifier.feed(stored):
                    break
    finally:
        conn.execute("COMMIT")
    return verifier.finish(*(head if head else (None, None, None)))
