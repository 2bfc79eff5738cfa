"""PostgreSQL helpers for tests in any folder (functions only; fixtures live in each conftest).

    reason = pg_unavailable_reason()          # None when a server answers, else a skip reason
    url = schema_url(base_url(), schema)      # ?schema=... for an isolated, throw-away schema
    await drop_schema(base_url(), schema)     # inside trio_asyncio.open_loop()

    @pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
    def backend(request):
        require_backend(request.param)        # PG: skipped with a reason when no server answers
        return request.param

    @pytest.fixture
    async def store_url(backend, tmp_path):
        async with backend_url(backend, tmp_path) as (url, _schema):
            yield url

Skip from a *sync* fixture (``require_backend``): pytest-trio drops the reason of a skip raised
inside an async fixture.

The server defaults to ``postgresql://postgres@127.0.0.1:5432/test``; set
``NORTHSTAR_TEST_PG_URL`` to use another.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def base_url() -> str:
    return os.environ.get("NORTHSTAR_TEST_PG_URL", DEFAULT_URL)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


@functools.cache
def pg_unavailable_reason(url: str | None = None) -> str | None:
    """A skip reason when nothing answers at the server's address (probed once per process)."""
    host, port = _address(url or base_url())
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"no PostgreSQL server answers at {host}:{port} ({exc.strerror or exc})"


def fresh_schema(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def schema_url(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def pg_fetch(url: str, sql: str, *args: Any, schema: str | None = None) -> list[Any]:
    """Run one statement on a fresh connection (needs ``trio_asyncio.open_loop()``); rows back."""
    import asyncpg
    import trio_asyncio

    async def run() -> list[Any]:
        settings = {"search_path": schema} if schema else {}
        conn = await asyncpg.connect(url.split("?", 1)[0], server_settings=settings)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    result: list[Any] = await trio_asyncio.aio_as_trio(run)()
    return result


async def pg_execute_script(url: str, statements: list[str], *, schema: str | None = None) -> None:
    """Run statements in one transaction on a fresh connection (a raw, "attacker" connection)."""
    import asyncpg
    import trio_asyncio

    async def run() -> None:
        settings = {"search_path": schema} if schema else {}
        conn = await asyncpg.connect(url.split("?", 1)[0], server_settings=settings)
        try:
            async with conn.transaction():
                for statement in statements:
                    await conn.execute(statement)
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(run)()


async def drop_schema(url: str, schema: str) -> None:
    """Drop a test schema, first ending any store connection still on it (a leak would block)."""
    await pg_fetch(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = $1 AND pid <> pg_backend_pid()",
        f"northstar/{schema}",
    )
    await pg_fetch(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def require_backend(backend: str) -> None:
    """``pytest.skip`` with a reason when ``backend`` is "postgres" and no server answers."""
    if backend == "postgres":
        import pytest

        reason = pg_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)


@contextlib.asynccontextmanager
async def backend_url(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, str | None]]:
    """A store URL for one test: ``(url, schema)``.

    ``"sqlite"``: a file under ``tmp_path`` (schema None). ``"postgres"``: ``pytest.skip`` with a
    reason when no server answers; else opens ``trio_asyncio.open_loop()`` around the test (the
    store needs it), makes a fresh schema and drops it afterwards.
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}", None
        return
    import pytest
    import trio
    import trio_asyncio

    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    schema = fresh_schema()
    async with trio_asyncio.open_loop():
        try:
            yield schema_url(base_url(), schema), schema
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await drop_schema(base_url(), schema)
