"""Content-addressed blob storage for tool payloads (the media assets' bytes).

Blobs live on the local file system, one directory per tenant and sharded by the first two
hex digits of their SHA-256::

    <root>/<tenant>/<sha[0:2]>/<sha>

Writing is crash-safe: the bytes go to a temporary file in the target directory, which is
fsynced, atomically renamed into place (``os.replace``), and then the directory itself is
fsynced. Putting bytes that are already stored is a no-op, so equal content is stored once
per tenant. Every file operation runs in a worker thread (``trio.to_thread.run_sync``).

Tenant names and digests are checked against strict patterns (no separators, no leading
dot) before they touch a path, so neither can be used for path traversal. Callers that
share blobs between records (see ``media_v2``) must serialize "is this blob still
referenced?" decisions themselves; the store only stores.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from northstar.common.errors import NotFound, ValidationFailed

TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"


def sha256_hex(data: bytes) -> str:
    """The lowercase hex SHA-256 of ``data`` (the blob's address)."""
    return hashlib.sha256(data).hexdigest()


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise ValidationFailed("invalid tenant for blob storage", errors=[{"loc": ["tenant"]}])
    return tenant


def check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not SHA256_PATTERN.fullmatch(sha):
        raise ValidationFailed("blob address must be 64 lowercase hex digits", errors=[{"loc": ["sha256"]}])
    return sha


def _fsync_dir(path: Path) -> None:
    """Persist a directory entry change (rename, unlink). Not every platform supports it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> None:
    """``mkdir -p``, fsyncing each parent whose entries changed so new directories persist."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        _fsync_dir(path.parent)


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` via temp file + fsync + rename + directory fsync."""
    if target.exists():
        return
    _make_dirs(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


class BlobStore:
    """Per-tenant, content-addressed byte storage under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path_for(self, tenant: str, sha: str) -> Path:
        """Where the blob ``sha`` of ``tenant`` lives (validated; nothing is created)."""
        # Both patterns exclude path separators, and a tenant cannot start with '.', so
        # neither part can be '.', '..' or absolute: the path stays under the tenant's dir.
        return self.root / check_tenant(tenant) / check_sha(sha)[:2] / sha

    async def put(self, tenant: str, data: bytes) -> str:
        """Store ``data`` for ``tenant``; return its SHA-256. Idempotent for equal bytes."""
        check_tenant(tenant)
        sha = await trio.to_thread.run_sync(sha256_hex, data)
        await trio.to_thread.run_sync(_write_atomically, self.path_for(tenant, sha), data)
        return sha

    async def get(self, tenant: str, sha: str) -> bytes:
        """The bytes stored at ``sha`` for ``tenant``; :class:`NotFound` when absent."""
        data = await trio.to_thread.run_sync(_read, self.path_for(tenant, sha))
        if data is None:
            raise NotFound("blob not found", sha256=sha)
        return data

    async def exists(self, tenant: str, sha: str) -> bool:
        return await trio.to_thread.run_sync(self.path_for(tenant, sha).is_file)

    async def delete(self, tenant: str, sha: str) -> bool:
        """Remove the blob; return whether it existed."""
        return await trio.to_thread.run_sync(_unlink, self.path_for(tenant, sha))


class KeyedLocks:
    """One :class:`trio.Lock` per key, created on demand and dropped when unused.

    For callers that must serialize decisions about one blob, keyed by ``(tenant, sha)``.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[trio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (trio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
