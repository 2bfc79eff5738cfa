"""Pure pieces (URLs, version transitions, encodings) and the schema each backend migrates to."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from northstar.common.errors import Conflict, ValidationFailed
from northstar.storage import kinds, open_store, parse_store_url
from northstar.storage.core import backoff_delays, encode_data, next_version, normalize_ts
from northstar.storage.pg_schema import MIGRATIONS as PG_MIGRATIONS
from northstar.storage.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS
from tests.storage.conftest import RawDB


@pytest.mark.parametrize(
    ("url", "backend", "path", "dsn", "schema"),
    [
        ("sqlite:///data/northstar.db", "sqlite", "data/northstar.db", None, None),
        ("sqlite:////var/lib/ns.db", "sqlite", "/var/lib/ns.db", None, None),
        ("postgresql://u@h:5433/db", "postgresql", None, "postgresql://u@h:5433/db", None),
        ("postgres://u@h/db?schema=s1&sslmode=disable", "postgresql", None,
         "postgresql://u@h/db?sslmode=disable", "s1"),
    ],
)
def test_store_urls(url: str, backend: str, path: str | None, dsn: str | None, schema: str | None) -> None:
    parsed = parse_store_url(url)
    assert (parsed.backend, parsed.path, parsed.dsn, parsed.schema) == (backend, path, dsn, schema)


def test_unknown_scheme_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"sqlite:///.*postgresql://"):
        parse_store_url("redis://localhost")


def test_next_version_transitions() -> None:
    assert next_version(0, None) == 1
    assert next_version(0, 0) == 1
    assert next_version(4, 4) == 5
    with pytest.raises(Conflict) as info:
        next_version(4, 3)
    assert info.value.details == {"current_version": 4}
    assert info.value.http_status == 409


def test_timestamps_normalise_to_fixed_width_utc() -> None:
    assert normalize_ts("2025-03-01T10:00:00Z") == "2025-03-01T10:00:00.000000Z"
    assert normalize_ts("2025-03-01T12:00:00+02:00") == "2025-03-01T10:00:00.000000Z"
    assert normalize_ts("2025-03-01") == "2025-03-01T00:00:00.000000Z"
    with pytest.raises(ValidationFailed):
        normalize_ts("soon")


def test_data_is_stored_as_canonical_json() -> None:
    assert encode_data({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    assert encode_data(None) is None
    with pytest.raises(ValidationFailed):
        encode_data({"bad": "\ud800"})  # a lone surrogate cannot be stored as UTF-8


def test_backoff_is_bounded_and_jittered() -> None:
    delays = list(backoff_delays(5, base=0.01, cap=0.05, rng=random.Random(1)))
    assert len(delays) == 4 and all(0 <= d <= 0.05 for d in delays)


def test_kinds_declared() -> None:
    expected = {"workbench_drafts", "kpi_bindings", "firearm_bindings", "firearm_grants",
                "component_registry", "activation_overlays", "media_assets", "api_keys", "upstreams", "upstream_drift",
                "bootstrap", "approvals", "approval_rules"}
    assert expected == kinds.ALL_KINDS


def test_both_backends_ship_the_same_migration_versions() -> None:
    assert [m.version for m in SQLITE_MIGRATIONS] == [m.version for m in PG_MIGRATIONS] == [1, 2, 3]


async def test_migrations_are_recorded_and_idempotent(store_url: str, raw: RawDB) -> None:
    for _ in range(2):
        async with open_store(store_url) as storage:
            await storage.store.save("acme", "api_keys", "k", {"n": 1})
    rows = await raw.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [tuple(r) for r in rows] == [(1, "versioned records"), (2, "hash-chained audit log"),
                                        (3, "tenant sequence numbers and the keyed audit seal")]


async def test_concurrent_openers_migrate_once(store_url: str, raw: RawDB) -> None:
    async def opener() -> None:
        async with open_store(store_url) as storage:
            await storage.store.check()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(opener)
    assert len(await raw.fetch("SELECT version FROM schema_migrations")) == 3


async def test_record_history_is_append_only(store_url: str, raw: RawDB) -> None:
    async with open_store(store_url) as storage:
        await storage.store.save("acme", "api_keys", "k", {"n": 1})
    for statement in ("UPDATE records SET data = '{}'", "DELETE FROM records"):
        with pytest.raises(Exception, match="append-only"):
            await raw.execute(statement)


async def test_sqlite_runs_wal_with_full_sync(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 's.db'}") as storage:
        db = storage.store.db

        def pragmas(conn: object) -> tuple:
            return tuple(conn.execute(f"PRAGMA {p}").fetchone()[0]  # type: ignore[attr-defined]
                         for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"))

        assert await db.write(pragmas) == ("wal", 2, 1, 5000)
        assert await db.read(pragmas) == ("wal", 2, 1, 5000)
        assert await storage.store.integrity_check() == "ok"
