"""BlobStore: content addressing, per-tenant layout, deletes, and path-traversal refusal."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from northstar.common.errors import NotFound, ValidationFailed
from northstar.mcp_gateway.tools.blobs import BlobStore


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_same_bytes_same_address_one_file(blobs: BlobStore) -> None:
    data = b"hello blobs"
    sha = await blobs.put("acme", data)
    again = await blobs.put("acme", data)
    assert sha == again == hashlib.sha256(data).hexdigest()
    assert files_under(blobs.root) == [blobs.root / "acme" / sha[:2] / sha]
    assert await blobs.get("acme", sha) == data
    assert await blobs.exists("acme", sha)


async def test_different_bytes_different_files(blobs: BlobStore) -> None:
    a = await blobs.put("acme", b"a")
    b = await blobs.put("acme", b"b")
    empty = await blobs.put("acme", b"")
    assert len({a, b, empty}) == 3
    assert len(files_under(blobs.root)) == 3
    assert await blobs.get("acme", empty) == b""


async def test_no_temporary_files_are_left(blobs: BlobStore) -> None:
    await blobs.put("acme", b"x" * 100_000)
    assert not [p for p in files_under(blobs.root) if p.name.startswith(".tmp-")]


async def test_blobs_are_per_tenant(blobs: BlobStore) -> None:
    sha = await blobs.put("acme", b"secret")
    assert not await blobs.exists("globex", sha)
    with pytest.raises(NotFound):
        await blobs.get("globex", sha)
    assert not await blobs.delete("globex", sha)
    assert await blobs.get("acme", sha) == b"secret"


async def test_delete(blobs: BlobStore) -> None:
    sha = await blobs.put("acme", b"bye")
    assert await blobs.delete("acme", sha)
    assert not await blobs.exists("acme", sha)
    with pytest.raises(NotFound):
        await blobs.get("acme", sha)
    assert not await blobs.delete("acme", sha)
    # Putting it back works after a delete.
    assert await blobs.put("acme", b"bye") == sha
    assert await blobs.get("acme", sha) == b"bye"


BAD_TENANTS = ["", ".", "..", "../other", "a/b", "a\\b", "/abs", ".hidden", "-x", "a\n", "a" * 129, "a\x00b"]


@pytest.mark.parametrize("tenant", BAD_TENANTS)
async def test_bad_tenants_are_rejected(blobs: BlobStore, tenant: str) -> None:
    with pytest.raises(ValidationFailed):
        await blobs.put(tenant, b"x")
    with pytest.raises(ValidationFailed):
        await blobs.get(tenant, "0" * 64)
    with pytest.raises(ValidationFailed):
        await blobs.delete(tenant, "0" * 64)
    assert files_under(blobs.root.parent) == []


BAD_SHAS = ["", "0" * 63, "0" * 65, "A" * 64, "g" * 64, "../" + "0" * 61, "/" + "0" * 63, "0" * 64 + "\n"]


@pytest.mark.parametrize("sha", BAD_SHAS)
async def test_bad_digests_are_rejected(blobs: BlobStore, sha: str) -> None:
    await blobs.put("acme", b"x")
    for action in (blobs.get, blobs.exists, blobs.delete):
        with pytest.raises(ValidationFailed):
            await action("acme", sha)
    assert len(files_under(blobs.root)) == 1


async def test_tenant_names_with_allowed_punctuation(blobs: BlobStore) -> None:
    for tenant in ("a", "Acme.Corp", "team@example.com", "a-b_c", "x..y"):
        sha = await blobs.put(tenant, tenant.encode())
        assert blobs.path_for(tenant, sha).parent.parent == blobs.root / tenant
        assert await blobs.get(tenant, sha) == tenant.encode()
