"""Fixtures for the built-in tool tests: a blob store, and media services on a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from northstar.mcp_gateway.tools.blobs import BlobStore
from northstar.mcp_gateway.tools.media_v2 import MediaServices
from tests.mcp_gateway.tools.tools_testkit import SMALL_LIMIT


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    from northstar.storage import open_store

    async with open_store(f"sqlite:///{(tmp_path / 'northstar.db').as_posix()}") as storage:
        yield storage.store


@pytest.fixture
def media(store: Any, blobs: BlobStore) -> MediaServices:
    return MediaServices(store=store, blobs=blobs, max_bytes=SMALL_LIMIT)
