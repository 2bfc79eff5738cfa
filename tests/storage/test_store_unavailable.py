"""Fail closed: a store that cannot be reached or written in time raises StoreUnavailable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio_asyncio

from northstar.common.errors import StoreUnavailable
from northstar.storage import open_store
from tests.pg import base_url, pg_fetch
from tests.storage.conftest import RawDB

K = "workbench_drafts"


async def test_sqlite_locked_past_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with open_store(f"sqlite:///{path}", busy_timeout_ms=20) as storage:
        await storage.store.save("acme", K, "d", {"n": 1})
        holder = sqlite3.connect(str(path), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with trio.fail_after(10), pytest.raises(StoreUnavailable) as info:
                await storage.store.save("acme", K, "d", {"n": 2})
            assert info.value.retry_after == 1 and info.value.http_status == 503
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # the writer connection came back clean: the failed save left nothing behind
        assert (await storage.store.save("acme", K, "d", {"n": 2}, expected_version=1)).version == 2


async def test_sqlite_full_database_is_unavailable_then_recovers(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'full.db'}") as storage:
        db = storage.store.db
        pages = await db.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        await db.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 1}"))
        with pytest.raises(StoreUnavailable, match="full"):
            await storage.store.save("acme", K, "big", {"blob": "x" * 200_000})
        await db.write(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        assert (await storage.store.save("acme", K, "big", {"blob": "x"})).version == 1
        assert await storage.store.integrity_check() == "ok"


async def test_sqlite_unopenable_path(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    with pytest.raises(StoreUnavailable):
        async with open_store(f"sqlite:///{tmp_path / 'a-directory.db'}"):
            pass


async def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file at all" * 200)
    with pytest.raises(StoreUnavailable):
        async with open_store(f"sqlite:///{path}"):
            pass


async def test_postgres_unreachable_port() -> None:
    async with trio_asyncio.open_loop():
        with trio.fail_after(15), pytest.raises(StoreUnavailable) as info:
            async with open_store("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2):
                pass
    assert info.value.retry_after == 1


async def test_postgres_without_the_asyncio_loop_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"trio_asyncio\.open_loop"):
        async with open_store("postgresql://postgres@127.0.0.1:1/test"):
            pass


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_connections_killed_mid_flight(store_url: str, raw: RawDB) -> None:
    async with open_store(store_url, min_size=2, max_size=2) as storage:
        await storage.store.save("acme", K, "d", {"n": 1})
        killed = await pg_fetch(
            base_url(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"northstar/{raw.schema}",
        )
        assert killed
        with trio.fail_after(15):
            outcomes = []
            for _ in range(6):  # a dead pooled connection fails at most once, then is replaced
                try:
                    outcomes.append((await storage.store.get("acme", K, "d")) is not None)
                except StoreUnavailable:
                    outcomes.append(False)
            assert outcomes[-1] is True and outcomes.count(False) <= 2, outcomes
            assert (await storage.store.save("acme", K, "d", {"n": 2}, expected_version=1)).version == 2


@pytest.mark.parametrize(
    ("url", "kwargs", "error"),
    [
        ("mysql://localhost/db", {}, ValueError),
        ("sqlite://host/x.db", {}, ValueError),
        ("sqlite:///", {}, ValueError),
        ("nonsense", {}, ValueError),
        ("postgresql://h/db?schema=bad-name", {}, ValueError),
        ("sqlite:///{tmp}/x.db", {"no_such_option": 1}, TypeError),
        ("sqlite:///{tmp}/x.db", {"audit_no_such_option": 1}, TypeError),
        ("sqlite:///{tmp}/x.db", {"synchronous": "SOMETIMES"}, ValueError),
    ],
)
async def test_bad_urls_and_options(tmp_path: Path, url: str, kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        async with open_store(url.format(tmp=tmp_path), **kwargs):
            pass
