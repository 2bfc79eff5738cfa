"""PostgreSQL for the store benchmarks: a throw-away schema per measurement, dropped afterwards.

The server is ``$NORTHSTAR_BENCH_PG_URL`` (else ``$NORTHSTAR_TEST_PG_URL``, else the local
default); the store creates the schema named in ``?schema=`` on first open.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def base_url() -> str:
    return os.environ.get("NORTHSTAR_BENCH_PG_URL") or os.environ.get("NORTHSTAR_TEST_PG_URL") or DEFAULT_URL


def unavailable_reason() -> str | None:
    parts = urlsplit(base_url())
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"no PostgreSQL server answers at {host}:{port} ({exc.strerror or exc})"


def schema_url(schema: str) -> str:
    url = base_url()
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


def drop_schema(schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` on a fresh connection (asyncpg through trio-asyncio)."""
    import asyncpg
    import trio
    import trio_asyncio

    async def drop() -> None:
        conn = await asyncpg.connect(base_url().split("?", 1)[0])
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    async def main() -> None:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(drop)()

    trio.run(main)


@contextmanager
def fresh_schema(prefix: str) -> Iterator[str]:
    """A store URL on a new schema, dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield schema_url(schema)
    finally:
        drop_schema(schema)
