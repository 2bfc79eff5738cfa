"""SQLite schema, as ordered migrations recorded in ``schema_migrations``.

Each migration is a list of statements applied in one ``BEGIN IMMEDIATE`` transaction (SQLite
DDL is transactional), so a crash mid-migration leaves the previous schema, and two processes
opening the same file apply it once. Never edit a shipped migration: append a new one.

``records`` and ``audit_log`` are append-only: triggers ABORT any UPDATE or DELETE. A user with
write access to the file can drop those triggers (a tamper test does exactly that); the audit
hash chain is what still catches the edit, and the keyed seal (``audit_head.mac``,
``audit_anchors``; see :mod:`.audit_seal`) what catches a re-hashed or truncated chain.
"""

from __future__ import annotations

import sqlite3

from .audit_chain import GENESIS_HASH
from .core import Migration, utc_now_iso

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "versioned records",
        (
            """CREATE TABLE records (
                change_id   INTEGER PRIMARY KEY AUTOINCREMENT,
                tenant      TEXT NOT NULL,
                kind        TEXT NOT NULL,
                resource_id TEXT NOT NULL,
                version     INTEGER NOT NULL CHECK (version >= 1),
                data        TEXT,
                created_at  TEXT NOT NULL,
                actor       TEXT,
                UNIQUE (tenant, kind, resource_id, version)
            )""",
            """CREATE TABLE resource_heads (
                tenant      TEXT NOT NULL,
                kind        TEXT NOT NULL,
                resource_id TEXT NOT NULL,
                version     INTEGER NOT NULL,
                change_id   INTEGER NOT NULL REFERENCES records (change_id),
                deleted     INTEGER NOT NULL,
                PRIMARY KEY (tenant, kind, resource_id)
            ) WITHOUT ROWID""",
            """CREATE TRIGGER records_no_update BEFORE UPDATE ON records
               BEGIN SELECT RAISE(ABORT, 'records is append-only'); END""",
            """CREATE TRIGGER records_no_delete BEFORE DELETE ON records
               BEGIN SELECT RAISE(ABORT, 'records is append-only'); END""",
        ),
    ),
    Migration(
        2,
        "hash-chained audit log",
        (
            """CREATE TABLE audit_log (
                seq        INTEGER PRIMARY KEY,
                ts         TEXT NOT NULL,
                tenant     TEXT,
                user_id    TEXT,
                tool       TEXT,
                operation  TEXT,
                decision   TEXT,
                request_id TEXT,
                sandbox    INTEGER NOT NULL DEFAULT 0,
                record     TEXT NOT NULL,
                prev_hash  TEXT NOT NULL,
                hash       TEXT NOT NULL
            )""",
            "CREATE INDEX audit_log_tenant_seq ON audit_log (tenant, seq)",
            "CREATE INDEX audit_log_ts ON audit_log (ts)",
            """CREATE TABLE audit_head (
                id   INTEGER PRIMARY KEY CHECK (id = 1),
                seq  INTEGER NOT NULL,
                hash TEXT NOT NULL
            )""",
            f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')",
            """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
               BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
            """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
               BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
        ),
    ),
    Migration(
        3,
        "tenant sequence numbers and the keyed audit seal",
        (
            # Each tenant's own numbering of its entries, given to existing rows in seq order
            # (the append-only trigger is lifted for that one UPDATE, inside this transaction).
            "ALTER TABLE audit_log ADD COLUMN tenant_seq INTEGER",
            "DROP TRIGGER audit_log_no_update",
            """UPDATE audit_log SET tenant_seq = numbered.n FROM (
                   SELECT seq, row_number() OVER (PARTITION BY tenant ORDER BY seq) AS n
                   FROM audit_log WHERE tenant IS NOT NULL
               ) AS numbered WHERE audit_log.seq = numbered.seq""",
            """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
               BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
            # Appended at the end of each tenant's range (like the (tenant, seq) index): a commit
            # dirties one leaf per tenant it touches, not one per user.
            "CREATE UNIQUE INDEX audit_log_tenant_number ON audit_log (tenant, tenant_seq)",
            "ALTER TABLE audit_head ADD COLUMN mac TEXT",
            """CREATE TABLE audit_seal (
                id         INTEGER PRIMARY KEY CHECK (id = 1),
                key_id     TEXT NOT NULL,
                sealed_at  TEXT NOT NULL,
                sealed_seq INTEGER NOT NULL
            )""",
            """CREATE TABLE audit_anchors (
                id     INTEGER PRIMARY KEY AUTOINCREMENT,
                seq    INTEGER NOT NULL,
                hash   TEXT NOT NULL,
                ts     TEXT NOT NULL,
                key_id TEXT NOT NULL,
                mac    TEXT NOT NULL
            )""",
            """CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
               BEGIN SELECT RAISE(ABORT, 'audit_anchors is append-only'); END""",
            """CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
               BEGIN SELECT RAISE(ABORT, 'audit_anchors is append-only'); END""",
        ),
    ),
)


def migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the pending migrations in one IMMEDIATE transaction; returns the versions applied."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        applied = [m.version for m in migrations if m.version not in done]
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, utc_now_iso()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied
