"""PostgreSQL operations: asyncio coroutines over an asyncpg pool, run by :mod:`.postgres`.

Every save also sends ``NOTIFY northstar_changes, '<schema>|<kind>'`` in its transaction: the
notification is delivered at commit (never for a rolled-back save) and wakes the watchers of
every replica (:mod:`.changes`).

These run on the trio-asyncio loop. Saves are one READ COMMITTED transaction: lock the head row
(``FOR UPDATE``), check the expected version, then one statement takes the next ``change_id``
from the counter row and inserts the version and its head. A concurrent creator of the same
new resource loses on the unique key: ``UniqueViolationError`` becomes ``Conflict`` (or a retry
when the save was unconditional). Serialization failures and deadlocks are retried a bounded
number of times with jittered backoff, then reported as ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

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
from .core import backoff_delays, conflict, decode_data, next_version, utc_now_iso
from .records import AuditEntry, ChangeEvent, Record, VerifyReport

RECORD_COLUMNS = "r.tenant, r.kind, r.resource_id, r.version, r.data, r.created_at, r.actor, r.change_id"
AUDIT_COLUMNS = "seq, ts, record, prev_hash, hash, tenant_seq"

_SAVE_SQL = """
WITH c AS (
    UPDATE change_counter SET value = value + 1 WHERE id = 1 RETURNING value
), r AS (
    INSERT INTO records (change_id, tenant, kind, resource_id, version, data, created_at, actor)
    SELECT c.value, $1, $2, $3, $4, $5, $6, $7 FROM c
    RETURNING change_id
), h AS (
    INSERT INTO resource_heads (tenant, kind, resource_id, version, change_id, deleted)
    SELECT $1, $2, $3, $4, r.change_id, $8 FROM r
    ON CONFLICT (tenant, kind, resource_id) DO UPDATE
    SET version = EXCLUDED.version, change_id = EXCLUDED.change_id, deleted = EXCLUDED.deleted
)
SELECT change_id, pg_notify('northstar_changes', current_schema() || '|' || $2) IS NULL FROM r
"""

# One round trip per batch: the rows travel as arrays, and the head moves in the same statement.
_AUDIT_APPEND = """
WITH ins AS (
    INSERT INTO audit_log (seq, ts, tenant, user_id, tool, operation, decision, request_id, sandbox,
                           record, prev_hash, hash, tenant_seq)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::boolean[], $10::text[], $11::text[], $12::text[],
                         $13::bigint[])
)
UPDATE audit_head SET seq = $14, hash = $15, mac = $16 WHERE id = 1
"""

# The head row locked, then each tenant of the batch's last tenant_seq (an index probe each),
# in one round trip: this statement's snapshot is taken after the lock was granted, so it sees
# every batch committed before ours.
_AUDIT_TENANT_HEADS = """
SELECT t.tenant, coalesce((SELECT max(a.tenant_seq) FROM audit_log a WHERE a.tenant = t.tenant), 0)
FROM unnest($1::text[]) AS t (tenant)
"""


def _record(row: Sequence[Any]) -> Record:
    return Record(row[0], row[1], row[2], row[3], decode_data(row[4]), row[5], row[6], row[7])


async def _current_version(conn: Any, tenant: str, kind: str, resource_id: str, lock: bool = False) -> int:
    sql = "SELECT version FROM resource_heads WHERE tenant = $1 AND kind = $2 AND resource_id = $3"
    value = await conn.fetchval(sql + (" FOR UPDATE" if lock else ""), tenant, kind, resource_id)
    return int(value) if value is not None else 0


async def _save_once(pool: Any, key: tuple[str, str, str], text: str | None, expected: int | None,
                     actor: str | None) -> Record:
    async with pool.acquire() as conn, conn.transaction():
        version = next_version(await _current_version(conn, *key, lock=True), expected)
        created_at = utc_now_iso()
        change_id = await conn.fetchval(_SAVE_SQL, *key, version, text, created_at, actor, text is None)
    return Record(*key, version, decode_data(text), created_at, actor, int(change_id))


async def save(pool: Any, tenant: str, kind: str, resource_id: str, text: str | None,
               expected: int | None, actor: str | None, attempts: int = 5) -> Record:
    key = (tenant, kind, resource_id)
    delays = [*backoff_delays(attempts), None]
    for delay in delays:
        try:
            return await _save_once(pool, key, text, expected, actor)
        except asyncpg.UniqueViolationError:
            if expected is not None or delay is None:
                async with pool.acquire() as conn:
                    raise conflict(await _current_version(conn, *key), expected) from None
        except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError) as exc:
            if delay is None:
                raise StoreUnavailable(f"postgres: contention persisted: {exc}", retry_after=1) from exc
        assert delay is not None
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def get(pool: Any, tenant: str, kind: str, resource_id: str, version: int | None) -> Record | None:
    if version is None:
        row = await pool.fetchrow(
            f"SELECT {RECORD_COLUMNS} FROM resource_heads h JOIN records r ON r.change_id = h.change_id"
            " WHERE h.tenant = $1 AND h.kind = $2 AND h.resource_id = $3",
            tenant, kind, resource_id,
        )
    else:
        row = await pool.fetchrow(
            f"SELECT {RECORD_COLUMNS} FROM records r"
            " WHERE r.tenant = $1 AND r.kind = $2 AND r.resource_id = $3 AND r.version = $4",
            tenant, kind, resource_id, version,
        )
    return _record(row) if row else None


async def list_latest(pool: Any, tenant: str, kind: str, prefix: str | None, after: str | None,
                      limit: int, include_deleted: bool) -> list[Record]:
    sql = [f"SELECT {RECORD_COLUMNS} FROM resource_heads h JOIN records r ON r.change_id = h.change_id"
           " WHERE h.tenant = $1 AND h.kind = $2"]
    args: list[Any] = [tenant, kind]
    if prefix:
        args.append(prefix)
        n = len(args)
        sql.append(f"AND h.resource_id >= ${n} AND left(h.resource_id, length(${n})) = ${n}")
    if after is not None:
        args.append(after)
        sql.append(f"AND h.resource_id > ${len(args)}")
    if not include_deleted:
        sql.append("AND NOT h.deleted")
    args.append(limit)
    sql.append(f"ORDER BY h.resource_id LIMIT ${len(args)}")
    return [_record(row) for row in await pool.fetch(" ".join(sql), *args)]


async def history(pool: Any, tenant: str, kind: str, resource_id: str) -> list[Record]:
    rows = await pool.fetch(
        f"SELECT {RECORD_COLUMNS} FROM records r WHERE r.tenant = $1 AND r.kind = $2 AND r.resource_id = $3"
        " ORDER BY r.version",
        tenant, kind, resource_id,
    )
    return [_record(row) for row in rows]


async def changes_since(pool: Any, change_id: int, kinds: list[str] | None, limit: int) -> list[ChangeEvent]:
    sql = "SELECT change_id, tenant, kind, resource_id, version FROM records WHERE change_id > $1"
    args: list[Any] = [change_id]
    if kinds is not None:
        sql += " AND kind = ANY($2::text[])"
        args.append(kinds)
    sql += f" ORDER BY change_id LIMIT ${len(args) + 1}"
    return [ChangeEvent(*row) for row in await pool.fetch(sql, *args, limit)]


async def check(pool: Any) -> None:
    await pool.fetchval("SELECT count(*) FROM schema_migrations")


# -- audit log ------------------------------------------------------------------------------------


async def audit_write(pool: Any, batch: list[PreparedRecord], seal: AuditSeal | None,
                      cache: TenantHeads) -> list[AuditRow]:
    """Chain one batch onto the head row locked FOR UPDATE: gap-free and linear across replicas."""
    try:
        return await _audit_write(pool, batch, seal, cache)
    except BaseException:
        cache.forget()  # the outcome is unknown: probe again next time
        raise


async def _audit_write(pool: Any, batch: list[PreparedRecord], seal: AuditSeal | None,
                       cache: TenantHeads) -> list[AuditRow]:
    async with pool.acquire() as conn, conn.transaction():
        head = await conn.fetchrow("SELECT seq, hash, mac FROM audit_head WHERE id = 1 FOR UPDATE")
        check_head(seal, int(head[0]), str(head[1]), head[2])
        heads, missing = cache.known(int(head[0]), tenants_of(batch))
        if missing:
            found = await conn.fetch(_AUDIT_TENANT_HEADS, missing)
            heads.update((row[0], int(row[1])) for row in found)
        rows = build_rows(batch, int(head[0]), str(head[1]), utc_now_iso(), heads)
        columns = zip(*[(r.seq, r.ts, *r.columns, r.text, r.prev_hash, r.hash, r.tenant_seq) for r in rows],
                      strict=True)
        last = rows[-1]
        mac = None if seal is None else seal.head_mac(last.seq, last.hash)
        await conn.execute(_AUDIT_APPEND, *[list(c) for c in columns], last.seq, last.hash, mac)
    cache.committed(last.seq, heads)
    return rows


async def audit_register_seal(pool: Any, seal: AuditSeal | None) -> None:
    """Register ``seal``'s key on a store that has none (sealing the head as it stands), or refuse."""
    async with pool.acquire() as conn, conn.transaction():
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        registered = await conn.fetchval("SELECT key_id FROM audit_seal WHERE id = 1")
        problem = registration_problem(registered, seal)
        if problem is not None:
            if seal is not None:
                seal.discard_new_key()  # it sealed nothing: leave no stray key behind
            raise AuditSealError(problem)
        if registered is None and seal is not None:
            await conn.execute("INSERT INTO audit_seal (id, key_id, sealed_at, sealed_seq) VALUES (1, $1, $2, $3)",
                               seal.key_id, utc_now_iso(), head[0])
            await conn.execute("UPDATE audit_head SET mac = $1 WHERE id = 1", seal.head_mac(head[0], head[1]))


async def audit_write_anchor(pool: Any, anchor: Anchor) -> None:
    await pool.execute("INSERT INTO audit_anchors (seq, hash, ts, key_id, mac) VALUES ($1, $2, $3, $4, $5)",
                       anchor.seq, anchor.hash, anchor.ts, anchor.key_id, anchor.mac)


def _entry(row: Sequence[Any]) -> AuditEntry:
    return AuditRow(row[0], row[1], row[2], row[3], row[4], decode_data(row[2]) or {}, row[5]).to_entry()


async def audit_query(pool: Any, filters: dict[str, Any], after_seq: int | None,
                      limit: int, by_tenant_seq: bool = False) -> list[AuditEntry]:
    ops = {"ts_from": "ts >= ", "ts_to": "ts < "}
    clauses, args = [], []
    for column, value in filters.items():
        if value is not None:
            args.append(value)
            clauses.append(f"{ops.get(column, column + ' = ')}${len(args)}")
    order = "tenant_seq" if by_tenant_seq else "seq"
    if after_seq is not None:
        args.append(after_seq)
        clauses.append(f"{order} > ${len(args)}")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log {where} ORDER BY {order} LIMIT ${len(args)}"
    rows = await pool.fetch(sql, *args)
    return [_entry(row) for row in rows]


async def audit_head_seq(pool: Any) -> int:
    """The seq of the newest committed entry (0: none yet)."""
    value = await pool.fetchval("SELECT seq FROM audit_head WHERE id = 1")
    return int(value) if value is not None else 0


async def audit_get(pool: Any, seq: int) -> AuditEntry | None:
    row = await pool.fetchrow(f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq = $1", seq)
    return _entry(row) if row else None


async def audit_verify(pool: Any, verifier: ChainVerifier) -> VerifyReport:
    """Walk the whole chain in one REPEATABLE READ snapshot, streaming with a cursor."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
        anchors = await conn.fetch("SELECT seq, hash, ts, key_id, mac FROM audit_anchors ORDER BY id")
        verifier.add_anchors(Anchor(*row) for row in anchors)
        query = (
            "SELECT seq, ts, record, prev_hash, hash, tenant, user_id, tool, operation, decision,"
            " request_id, sandbox, tenant_seq FROM audit_log ORDER BY seq"
        )
        async for row in conn.cursor(query, prefetch=1000):
            stored = StoredRow(row[0], row[1], row[2], row[3], row[4], (*row[5:11], bool(row[11])), row[12])
            if not verifier.feed(stored):
                break
    return verifier.finish(*(tuple(head) if head else (None, None, None)))
