"""PostgreSQL schema, as ordered migrations recorded in ``schema_migrations``.

All pending migrations run in ONE transaction (PostgreSQL DDL is transactional) under an
advisory transaction lock keyed on the current schema, so replicas starting together apply them
once. Text keys use ``COLLATE "C"`` so ordering and keyset pagination match SQLite byte order.
``change_counter`` hands out ``change_id`` under a row lock held to commit, so ids become
visible in commit order (a sequence would let a poller step past a slow transaction's lower id).
``records`` and ``audit_log`` are append-only: triggers raise on UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

from typing import Any

from .audit_chain import GENESIS_HASH
from .core import Migration, utc_now_iso

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "versioned records",
        (
            "CREATE TABLE change_counter (id INT PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL)",
            "INSERT INTO change_counter (id, value) VALUES (1, 0)",
            """CREATE TABLE records (
                change_id   BIGINT PRIMARY KEY,
                tenant      TEXT COLLATE "C" NOT NULL,
                kind        TEXT COLLATE "C" NOT NULL,
                resource_id TEXT COLLATE "C" NOT NULL,
                version     INT NOT NULL CHECK (version >= 1),
                data        TEXT,
                created_at  TEXT COLLATE "C" NOT NULL,
                actor       TEXT,
                UNIQUE (tenant, kind, resource_id, version)
            )""",
            """CREATE TABLE resource_heads (
                tenant      TEXT COLLATE "C" NOT NULL,
                kind        TEXT COLLATE "C" NOT NULL,
                resource_id TEXT COLLATE "C" NOT NULL,
                version     INT NOT NULL,
                change_id   BIGINT NOT NULL REFERENCES records (change_id),
                deleted     BOOLEAN NOT NULL,
                PRIMARY KEY (tenant, kind, resource_id)
            )""",
            """CREATE FUNCTION northstar_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
            """CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON records
               FOR EACH ROW EXECUTE FUNCTION northstar_append_only()""",
            """CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON records
               FOR EACH STATEMENT EXECUTE FUNCTION northstar_append_only()""",
        ),
    ),
    Migration(
        2,
        "hash-chained audit log",
        (
            """CREATE TABLE audit_log (
                seq        BIGINT PRIMARY KEY,
                ts         TEXT COLLATE "C" NOT NULL,
                tenant     TEXT COLLATE "C",
                user_id    TEXT,
                tool       TEXT,
                operation  TEXT,
                decision   TEXT,
                request_id TEXT,
                sandbox    BOOLEAN NOT NULL DEFAULT false,
                record     TEXT NOT NULL,
                prev_hash  TEXT NOT NULL,
                hash       TEXT NOT NULL
            )""",
            "CREATE INDEX audit_log_tenant_seq ON audit_log (tenant, seq)",
            "CREATE INDEX audit_log_ts ON audit_log (ts)",
            """CREATE TABLE audit_head (
                id   INT PRIMARY KEY CHECK (id = 1),
                seq  BIGINT NOT NULL,
                hash TEXT NOT NULL
            )""",
            f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')",
            """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
               FOR EACH ROW EXECUTE FUNCTION northstar_append_only()""",
            """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
               FOR EACH STATEMENT EXECUTE FUNCTION northstar_append_only()""",
        ),
    ),
    Migration(
        3,
        "tenant sequence numbers and the keyed audit seal",
        (
            # Each tenant's own numbering of its entries, given to existing rows in seq order
            # (the append-only trigger is lifted for that one UPDATE, inside this transaction).
            "ALTER TABLE audit_log ADD COLUMN tenant_seq BIGINT",
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
            """UPDATE audit_log SET tenant_seq = numbered.n FROM (
                   SELECT seq, row_number() OVER (PARTITION BY tenant ORDER BY seq) AS n
                   FROM audit_log WHERE tenant IS NOT NULL
               ) AS numbered WHERE audit_log.seq = numbered.seq""",
            "ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only",
            # Appended at the end of each tenant's range (like the (tenant, seq) index): a commit
            # dirties one leaf per tenant it touches, not one per user.
            "CREATE UNIQUE INDEX audit_log_tenant_number ON audit_log (tenant, tenant_seq)",
            "ALTER TABLE audit_head ADD COLUMN mac TEXT",
            """CREATE TABLE audit_seal (
                id         INT PRIMARY KEY CHECK (id = 1),
                key_id     TEXT NOT NULL,
                sealed_at  TEXT NOT NULL,
                sealed_seq BIGINT NOT NULL
            )""",
            """CREATE TABLE audit_anchors (
                id     BIGSERIAL PRIMARY KEY,
                seq    BIGINT NOT NULL,
                hash   TEXT NOT NULL,
                ts     TEXT NOT NULL,
                key_id TEXT NOT NULL,
                mac    TEXT NOT NULL
            )""",
            """CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors
               FOR EACH ROW EXECUTE FUNCTION northstar_append_only()""",
            """CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
               FOR EACH STATEMENT EXECUTE FUNCTION northstar_append_only()""",
        ),
    ),
)


async def migrate(conn: Any, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """(asyncio) Apply pending migrations atomically under the schema's advisory lock."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('northstar.migrations.' || current_schema()))"
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version, migration.name, utc_now_iso(),
            )
            applied.append(migration.version)
    return applied
