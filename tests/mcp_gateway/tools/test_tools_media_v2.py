"""media_v2 against a real SQLite store and a BlobStore in tmp_path."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
import trio
from pydantic import ValidationError

from northstar.common.errors import NotFound, PayloadTooLarge, StoreUnavailable, ToolFailed, ValidationFailed
from northstar.mcp_gateway.tools import media_v2
from northstar.mcp_gateway.tools.media_v2 import (
    KIND,
    MEDIA_V2,
    CreateAssetInput,
    ListAssetsOutput,
    MediaServices,
)
from tests.mcp_gateway.tools.tools_testkit import SMALL_LIMIT, call, media_call, tool_ctx

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452")  # a PNG signature: not UTF-8


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def create(media: MediaServices, tenant: str = "acme", **fields: Any) -> Any:
    fields.setdefault("name", "note.txt")
    fields.setdefault("mime_type", "text/plain")
    if "content_base64" not in fields:
        fields.setdefault("content_text", "hello")
    return await media_call(media, "create_asset", tenant=tenant, **fields)


async def list_all(media: MediaServices, tenant: str = "acme", **args: Any) -> tuple[list[str], int]:
    """Follow next_cursor to the end; return the asset ids and the number of pages."""
    ids: list[str] = []
    cursor, pages = None, 0
    while True:
        page: ListAssetsOutput = await media_call(media, "list_assets", tenant=tenant, cursor=cursor, **args)
        pages += 1
        ids += [a.asset_id for a in page.assets]
        if page.next_cursor is None:
            return ids, pages
        cursor = page.next_cursor
        assert pages < 100


# --------------------------------------------------------------------------- create / get


async def test_create_text_then_get(media: MediaServices) -> None:
    created = await create(media, name="Hello World", mime_type="Text/Plain", content_text="héllo ✓",
                           tags=["greeting", "demo", "greeting"])
    assert created.asset_id.startswith("ast_") and len(created.asset_id) == 28
    assert created.mime_type == "text/plain"
    assert created.tags == ["greeting", "demo"]
    assert created.size == len("héllo ✓".encode())
    assert created.sha256 == hashlib.sha256("héllo ✓".encode()).hexdigest()
    assert created.created_by == "alice" and created.created_at.endswith("Z")
    assert created.content_text is None and created.encoding is None  # create returns metadata only

    got = await media_call(media, "get_asset", asset_id=created.asset_id)
    assert (got.encoding, got.content_text, got.content_base64) == ("text", "héllo ✓", None)
    assert got.model_dump(exclude={"encoding", "content_text", "content_base64"}) == created.model_dump(
        exclude={"encoding", "content_text", "content_base64"}
    )
    record = await media.store.get("acme", KIND, created.asset_id)
    assert record is not None and record.data is not None and record.data["sha256"] == created.sha256
    assert await media.blobs.get("acme", created.sha256) == "héllo ✓".encode()


async def test_create_base64_then_get(media: MediaServices) -> None:
    created = await create(media, name="pixel.png", mime_type="image/png", content_base64=b64(PNG))
    got = await media_call(media, "get_asset", asset_id=created.asset_id)
    assert (got.encoding, got.content_text) == ("base64", None)
    assert base64.b64decode(got.content_base64) == PNG
    assert got.size == len(PNG)


async def test_get_without_content(media: MediaServices) -> None:
    created = await create(media)
    got = await media_call(media, "get_asset", asset_id=created.asset_id, include_content=False)
    assert (got.encoding, got.content_text, got.content_base64) == (None, None, None)
    assert got.name == "note.txt"


@pytest.mark.parametrize(
    ("mime", "content", "encoding"),
    [
        ("application/json", b'{"a": 1}', "text"),
        ("application/ld+json", b"{}", "text"),
        ("text/csv", b"a,b\n1,2\n", "text"),
        ("text/plain", PNG, "base64"),  # textual type, but not UTF-8
        ("application/octet-stream", b"plain ascii", "base64"),
    ],
)
async def test_content_encoding_follows_type_and_bytes(
    media: MediaServices, mime: str, content: bytes, encoding: str
) -> None:
    created = await create(media, mime_type=mime, content_base64=b64(content))
    got = await media_call(media, "get_asset", asset_id=created.asset_id)
    assert got.encoding == encoding
    if encoding == "text":
        assert got.content_text == content.decode()
    else:
        assert base64.b64decode(got.content_base64) == content


async def test_base64_with_line_breaks_is_accepted(media: MediaServices) -> None:
    data = bytes(range(48))
    wrapped = "\n".join(b64(data)[i : i + 16] for i in range(0, 64, 16))
    created = await create(media, mime_type="application/octet-stream", content_base64=wrapped)
    assert await media.blobs.get("acme", created.sha256) == data


async def test_unknown_asset_is_not_found(media: MediaServices) -> None:
    with pytest.raises(NotFound):
        await media_call(media, "get_asset", asset_id="ast_" + "0" * 24)
    with pytest.raises(NotFound):
        await media_call(media, "delete_asset", asset_id="ast_" + "0" * 24)


# --------------------------------------------------------------------------- list


async def test_list_paginates_with_a_cursor(media: MediaServices) -> None:
    created = sorted([(await create(media, name=f"n{i}")).asset_id for i in range(5)])
    first = await media_call(media, "list_assets", limit=2)
    assert [a.asset_id for a in first.assets] == created[:2]
    assert first.next_cursor == created[1]
    assert all(not hasattr(a, "content_text") for a in first.assets)
    ids, pages = await list_all(media, limit=2)
    assert (ids, pages) == (created, 3)
    ids, pages = await list_all(media, limit=5)  # exactly one full page: no empty trailing page
    assert (ids, pages) == (created, 1)
    ids, pages = await list_all(media)
    assert (ids, pages) == (created, 1)


async def test_list_of_nothing(media: MediaServices) -> None:
    page = await media_call(media, "list_assets")
    assert (page.assets, page.next_cursor) == ([], None)


async def test_list_filters_by_tag(media: MediaServices) -> None:
    red = sorted([(await create(media, tags=["red", f"n{i}"])).asset_id for i in range(3)])
    await create(media, tags=["blue"])
    await create(media)
    ids, _ = await list_all(media, tag="red", limit=2)
    assert ids == red
    ids, _ = await list_all(media, tag="green")
    assert ids == []


async def test_tag_filter_scan_is_bounded(media: MediaServices, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_v2, "LIST_SCAN_BUDGET", 2)
    for _ in range(6):
        await create(media)
    rare = (await create(media, tags=["rare"])).asset_id
    first = await media_call(media, "list_assets", tag="rare", limit=10)
    assert len(first.assets) <= 1 and first.next_cursor is not None  # short page, more to scan
    ids, pages = await list_all(media, tag="rare", limit=10)
    assert ids == [rare] and 3 <= pages <= 5


async def test_deleted_assets_are_not_listed(media: MediaServices) -> None:
    keep, gone = (await create(media)).asset_id, (await create(media)).asset_id
    await media_call(media, "delete_asset", asset_id=gone)
    ids, _ = await list_all(media)
    assert ids == [keep]


# --------------------------------------------------------------------------- delete


async def test_delete_tombstones_and_removes_the_unreferenced_blob(media: MediaServices) -> None:
    created = await create(media, content_text="only me")
    out = await media_call(media, "delete_asset", asset_id=created.asset_id)
    assert (out.asset_id, out.deleted) == (created.asset_id, True)
    with pytest.raises(NotFound):
        await media_call(media, "get_asset", asset_id=created.asset_id)
    assert not await media.blobs.exists("acme", created.sha256)
    record = await media.store.get("acme", KIND, created.asset_id)
    assert record is not None and record.data is None and record.version == 2
    with pytest.raises(NotFound):
        await media_call(media, "delete_asset", asset_id=created.asset_id)


async def test_shared_blob_survives_until_its_last_asset_is_deleted(media: MediaServices) -> None:
    a = await create(media, name="a", content_text="same bytes")
    b = await create(media, name="b", mime_type="application/octet-stream",
                     content_base64=b64(b"same bytes"))
    assert a.sha256 == b.sha256
    await media_call(media, "delete_asset", asset_id=a.asset_id)
    assert await media.blobs.exists("acme", a.sha256)
    got = await media_call(media, "get_asset", asset_id=b.asset_id)
    assert base64.b64decode(got.content_base64) == b"same bytes"
    await media_call(media, "delete_asset", asset_id=b.asset_id)
    assert not await media.blobs.exists("acme", a.sha256)


async def test_same_bytes_in_another_tenant_are_not_a_reference(media: MediaServices) -> None:
    mine = await create(media, tenant="acme", content_text="shared text")
    theirs = await create(media, tenant="globex", content_text="shared text")
    await media_call(media, "delete_asset", tenant="acme", asset_id=mine.asset_id)
    assert not await media.blobs.exists("acme", mine.sha256)
    got = await media_call(media, "get_asset", tenant="globex", asset_id=theirs.asset_id)
    assert got.content_text == "shared text"


# --------------------------------------------------------------------------- tenants


async def test_tenants_never_see_each_other(media: MediaServices) -> None:
    secret = await create(media, tenant="acme", content_text="acme only")
    for op, args in [("get_asset", {"asset_id": secret.asset_id}),
                     ("delete_asset", {"asset_id": secret.asset_id})]:
        with pytest.raises(NotFound):
            await media_call(media, op, tenant="globex", **args)
    ids, _ = await list_all(media, tenant="globex")
    assert ids == []
    assert await media_v2.list_asset_resources(media, "globex") == []
    with pytest.raises(NotFound):
        await media_v2.read_asset_resource(media, "globex", media_v2.resource_uri(secret.asset_id))
    # ... and acme still has it.
    got = await media_call(media, "get_asset", tenant="acme", asset_id=secret.asset_id)
    assert got.content_text == "acme only"


# --------------------------------------------------------------------------- limits and errors


async def test_content_at_the_limit_is_accepted(media: MediaServices) -> None:
    await create(media, content_text="x" * SMALL_LIMIT)
    await create(media, mime_type="application/octet-stream", content_base64=b64(b"\0" * SMALL_LIMIT))


@pytest.mark.parametrize(
    "content",
    [
        {"content_text": "x" * (SMALL_LIMIT + 1)},
        {"content_text": "é" * (SMALL_LIMIT // 2 + 1)},  # few characters, too many UTF-8 bytes
        {"content_base64": b64(b"\0" * (SMALL_LIMIT + 1))},
        {"content_base64": "A" * (SMALL_LIMIT * 100)},  # refused before decoding
    ],
)
async def test_content_over_the_limit(media: MediaServices, content: dict[str, str]) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        await create(media, **content)
    assert info.value.details == {"limit": SMALL_LIMIT}
    assert await media_v2.list_asset_resources(media, "acme") == []


async def test_default_limit_is_8_mib(store: Any, blobs: Any) -> None:
    assert MediaServices(store=store, blobs=blobs).max_bytes == 8 * 1024 * 1024


@pytest.mark.parametrize("bad", ["abc", "!!!!", "aGVsbG8=x", "aGVsbG8", "é"])
async def test_bad_base64_is_a_validation_error(media: MediaServices, bad: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        await create(media, mime_type="application/octet-stream", content_base64=bad)
    assert info.value.details["errors"][0]["path"] == "/content_base64"


async def test_lone_surrogate_text_is_a_validation_error(media: MediaServices) -> None:
    with pytest.raises(ValidationFailed):
        await create(media, content_text="bad \ud800 text")


VALID = {"name": "n", "mime_type": "text/plain", "content_text": "x"}


@pytest.mark.parametrize(
    "changes",
    [
        {"content_base64": "eA=="},  # both content fields
        {"content_text": None},  # neither
        {"tags": ["Upper"]},
        {"tags": ["-leading"]},
        {"tags": ["a" * 33]},
        {"tags": ["has space"]},
        {"tags": [f"t{i}" for i in range(21)]},
        {"mime_type": "text"},
        {"mime_type": "text/"},
        {"mime_type": "/plain"},
        {"mime_type": "te xt/plain"},
        {"mime_type": "text/plain; charset=utf-8"},
        {"name": ""},
        {"name": "x" * 201},
        {"name": "line\nbreak"},
        {"name": "nul\x00"},
        {"name": "c1\x85"},
        {"owner": "someone"},  # unknown field
    ],
)
def test_create_input_validation(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CreateAssetInput.model_validate({**VALID, **changes})


def test_create_input_accepts_edge_values() -> None:
    tags = [f"t{i}" for i in range(20)]
    inputs = CreateAssetInput.model_validate(
        {**VALID, "name": "x" * 200, "mime_type": "application/vnd.api+json", "tags": tags}
    )
    assert len(inputs.tags) == 20 and inputs.mime_type == "application/vnd.api+json"


@pytest.mark.parametrize(
    ("operation", "arguments"),
    [
        ("get_asset", {"asset_id": "../etc/passwd"}),
        ("get_asset", {"asset_id": "ast_XYZ"}),
        ("list_assets", {"limit": 0}),
        ("list_assets", {"limit": 101}),
        ("list_assets", {"tag": "Bad Tag"}),
        ("list_assets", {"cursor": "not-a-cursor"}),
        ("delete_asset", {}),
    ],
)
def test_read_and_delete_input_validation(operation: str, arguments: dict[str, Any]) -> None:
    found = MEDIA_V2.find(operation)
    assert found is not None
    with pytest.raises(ValidationError):
        found[1].input_model.model_validate(arguments)


async def test_missing_services_is_a_tool_failure() -> None:
    with pytest.raises(ToolFailed):
        await call(MEDIA_V2, tool_ctx(services=None), "list_assets")


# --------------------------------------------------------------------------- failure cleanup


class FailingSaves:
    """The real store, except that every save fails as if the database were down."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def save(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down for the test", retry_after=1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_failed_save_leaves_no_new_blob(media: MediaServices) -> None:
    kept = await create(media, content_text="already here")
    broken = MediaServices(store=FailingSaves(media.store), blobs=media.blobs, max_bytes=SMALL_LIMIT)
    with pytest.raises(StoreUnavailable):
        await create(broken, content_text="brand new")
    assert not await media.blobs.exists("acme", hashlib.sha256(b"brand new").hexdigest())
    with pytest.raises(StoreUnavailable):
        await create(broken, content_text="already here")  # the blob is shared: it must stay
    assert await media.blobs.exists("acme", kept.sha256)


# --------------------------------------------------------------------------- MCP resources


async def test_resources_list_and_read(media: MediaServices) -> None:
    text = await create(media, name="readme", content_text="# Title")
    binary = await create(media, name="pixel", mime_type="image/png", content_base64=b64(PNG))
    listed = {r["uri"]: r for r in await media_v2.list_asset_resources(media, "acme")}
    assert listed == {
        f"media://assets/{text.asset_id}": {"uri": f"media://assets/{text.asset_id}", "name": "readme",
                                             "mimeType": "text/plain", "size": 7},
        f"media://assets/{binary.asset_id}": {"uri": f"media://assets/{binary.asset_id}", "name": "pixel",
                                               "mimeType": "image/png", "size": len(PNG)},
    }
    text_uri, blob_uri = f"media://assets/{text.asset_id}", f"media://assets/{binary.asset_id}"
    read_text = await media_v2.read_asset_resource(media, "acme", text_uri)
    assert read_text == {"uri": text_uri, "mimeType": "text/plain", "text": "# Title"}
    read_blob = await media_v2.read_asset_resource(media, "acme", blob_uri)
    assert read_blob == {"uri": blob_uri, "mimeType": "image/png", "blob": b64(PNG)}


async def test_resources_are_capped(media: MediaServices, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_v2, "MAX_RESOURCES", 3)
    for i in range(4):
        await create(media, name=f"n{i}")
    assert len(await media_v2.list_asset_resources(media, "acme")) == 3


@pytest.mark.parametrize(
    "uri",
    [
        "media://assets/ast_" + "0" * 24,  # well formed, unknown
        "media://assets/../../etc/passwd",
        "media://assets/",
        "file:///etc/passwd",
        "media://other/ast_" + "0" * 24,
    ],
)
async def test_reading_an_unknown_resource_is_not_found(media: MediaServices, uri: str) -> None:
    await create(media)
    with pytest.raises(NotFound):
        await media_v2.read_asset_resource(media, "acme", uri)


async def test_deleted_asset_resource_is_gone(media: MediaServices) -> None:
    created = await create(media)
    await media_call(media, "delete_asset", asset_id=created.asset_id)
    assert await media_v2.list_asset_resources(media, "acme") == []
    with pytest.raises(NotFound):
        await media_v2.read_asset_resource(media, "acme", media_v2.resource_uri(created.asset_id))


# --------------------------------------------------------------------------- concurrency


async def test_concurrent_creates_and_deletes_keep_shared_blobs_consistent(media: MediaServices) -> None:
    """Creates and deletes of assets with the same bytes, all at once: live assets keep their blob."""
    first = [await create(media, name=f"old{i}", content_text="shared") for i in range(3)]
    created: list[Any] = []

    async def make(i: int) -> None:
        created.append(await create(media, name=f"new{i}", content_text="shared"))

    async def remove(asset_id: str) -> None:
        await media_call(media, "delete_asset", asset_id=asset_id)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i, old in enumerate(first):
                nursery.start_soon(remove, old.asset_id)
                nursery.start_soon(make, i)
    assert len(media.locks) == 0  # the lock table empties again
    sha = first[0].sha256
    assert await media.blobs.exists("acme", sha)
    for asset in created:
        got = await media_call(media, "get_asset", asset_id=asset.asset_id)
        assert got.content_text == "shared"
    for asset in created:
        await remove(asset.asset_id)
    assert not await media.blobs.exists("acme", sha)
