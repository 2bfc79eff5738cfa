"""Storage fixtures: every store test runs on SQLite and on PostgreSQL.

The PostgreSQL variant skips with a reason when no server answers, and otherwise gets a fresh
schema (``?schema=t_<random>``) dropped after the test. ``raw`` is a plain connection to the same
database, for doing what an attacker with file or database access could do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from northstar.storage import Storage, open_store
from tests.pg import backend_url, base_url, pg_execute_script, pg_fetch, require_backend

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


class RawDB:
    """A direct connection to the store's database, outside the store's API."""

    def __init__(self, backend: str, url: str, *, path: Path | None = None, schema: str | None = None):
        self.backend, self.url, self.path, self.schema = backend, url, path, schema

    async def execute(self, *statements: str) -> None:
        if self.backend == "sqlite":
            await trio.to_thread.run_sync(self._sqlite_script, statements)
        else:
            await pg_execute_script(base_url(), list(statements), schema=self.schema)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            return await trio.to_thread.run_sync(self._sqlite_fetch, sql)
        return [tuple(row) for row in await pg_fetch(base_url(), sql, schema=self.schema)]

    def _sqlite_script(self, statements: tuple[str, ...]) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements:
                conn.execute(statement)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _sqlite_fetch(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(str(self.path))
        try:
            return [tuple(row) for row in conn.execute(sql)]
        finally:
            conn.close()

    async def drop_audit_triggers(self) -> None:
        """Remove the append-only guard on the audit log, as an attacker with access would."""
        if self.backend == "sqlite":
            await self.execute("DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete")
        else:
            await self.execute("DROP TRIGGER audit_log_append_only ON audit_log")


@pytest.fixture
async def raw_and_url(backend: str, tmp_path: Path) -> AsyncIterator[tuple[RawDB, str]]:
    async with backend_url(backend, tmp_path) as (url, schema):
        path = tmp_path / "store.db" if backend == "sqlite" else None
        yield RawDB(backend, url, path=path, schema=schema), url


@pytest.fixture
def store_url(raw_and_url: tuple[RawDB, str]) -> str:
    return raw_and_url[1]


@pytest.fixture
def raw(raw_and_url: tuple[RawDB, str]) -> RawDB:
    return raw_and_url[0]


@pytest.fixture
async def storage(store_url: str) -> AsyncIterator[Storage]:
    async with open_store(store_url) as opened:
        yield opened
