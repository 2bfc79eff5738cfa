"""The ``media_v2`` built-in tool: per-tenant media assets, plus their MCP resources.

Scopes and operations:

* ``media.read``: ``get_asset`` (metadata and, by default, the content) and ``list_assets``
  (keyset-paginated, optionally filtered by tag).
* ``media.write``: ``create_asset`` and ``delete_asset`` (destructive).

An asset is two things: its metadata, a versioned record of kind ``media_assets`` keyed by
``asset_id`` in the :class:`~northstar.storage.VersionedStore`, and its bytes, stored once per
tenant and content in the :class:`~northstar.mcp_gateway.tools.blobs.BlobStore`. Deleting
an asset tombstones the record and removes the blob only when no other live asset of the
tenant refers to the same digest. Decisions about a shared blob (create's "store the bytes
and record them", delete's "still referenced?") run under a lock keyed by (tenant, digest)
held by the :class:`MediaServices` instance, so they are race-free within one gateway
process; a multi-process deployment would need the check inside the store's transaction.

Handlers get their services only from ``tctx.services`` (a :class:`MediaServices`) and key
everything by ``tctx.request.tenant``: a tenant never sees another tenant's assets, and the
sandbox can run the same handlers against isolated services.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import trio
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from northstar.common.errors import NotFound, PayloadTooLarge, ToolFailed, ValidationFailed
from northstar.mcp_gateway.tools.blobs import BlobStore, KeyedLocks, sha256_hex
from northstar.mcp_gateway.tools.echo import utc_now_iso
from northstar.mcp_gateway.tools.model import Annotations, Operation, Scope, ToolContext, ToolDefinition
from northstar.storage.kinds import MEDIA_ASSETS

if TYPE_CHECKING:
    from northstar.storage.base import VersionedStore
    from northstar.storage.records import Record

KIND = MEDIA_ASSETS
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
RESOURCE_PREFIX = "media://assets/"
MAX_RESOURCES = 100
SCAN_PAGE = 200
LIST_SCAN_BUDGET = 1000  # records a filtered list_assets call examines at most

ASSET_ID_PATTERN = r"^ast_[0-9a-f]{24}$"
TAG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
MIME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"  # no C0/C1 control characters
_ASSET_ID = re.compile(ASSET_ID_PATTERN)

AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN, description="An asset id, 'ast_' + 24 hex.")]
Tag = Annotated[str, Field(pattern=TAG_PATTERN, description="Lowercase tag.")]
MimeType = Annotated[str, Field(pattern=MIME_PATTERN, max_length=255), AfterValidator(str.lower)]
AssetName = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN)]


# --------------------------------------------------------------------------- services


@dataclass
class MediaServices:
    """What media_v2 handlers need; passed as ``ToolContext.services``."""

    store: VersionedStore
    blobs: BlobStore
    max_bytes: int = DEFAULT_MAX_BYTES
    locks: KeyedLocks = field(default_factory=KeyedLocks, repr=False, compare=False)


def services_of(tctx: ToolContext) -> MediaServices:
    services = tctx.services
    if not isinstance(services, MediaServices):
        raise ToolFailed("media_v2 is not configured with media services")
    return services


# --------------------------------------------------------------------------- models


class AssetMeta(BaseModel):
    asset_id: str
    name: str
    mime_type: str
    size: int
    sha256: str
    tags: list[str]
    created_at: str
    created_by: str


class AssetOut(AssetMeta):
    encoding: Literal["text", "base64"] | None = Field(
        default=None, description="How the content is given ('text': UTF-8, or 'base64'); null without it."
    )
    content_text: str | None = None
    content_base64: str | None = None


class GetAssetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asset_id: AssetId
    include_content: bool = True


class ListAssetsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: Tag | None = Field(default=None, description="Only assets carrying this tag.")
    cursor: AssetId | None = Field(default=None, description="next_cursor from the previous page (opaque).")
    limit: int = Field(default=20, ge=1, le=100)


class ListAssetsOutput(BaseModel):
    assets: list[AssetMeta]
    next_cursor: str | None = Field(
        default=None, description="Pass as cursor for the next page; null on the last. Pages may be short."
    )


class CreateAssetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: AssetName
    mime_type: MimeType = Field(description="type/subtype, e.g. text/plain or image/png.")
    content_text: str | None = Field(default=None, description="The content as text (stored as UTF-8).")
    content_base64: str | None = Field(default=None, description="The content as standard base64.")
    tags: list[Tag] = Field(default_factory=list, max_length=20)

    @field_validator("tags")
    @classmethod
    def _dedupe_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))

    @model_validator(mode="after")
    def _exactly_one_content(self) -> CreateAssetInput:
        if (self.content_text is None) == (self.content_base64 is None):
            raise ValueError("give exactly one of content_text and content_base64")
        return self


class DeleteAssetInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asset_id: AssetId


class DeleteAssetOutput(BaseModel):
    asset_id: str
    deleted: bool = True


# --------------------------------------------------------------------------- content


def is_textual(mime_type: str) -> bool:
    mime = mime_type.lower()
    return mime.startswith("text/") or mime == "application/json" or mime.endswith("+json")


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"asset content is larger than {max_bytes} bytes", limit=max_bytes)


def _invalid(loc: str, msg: str) -> ValidationFailed:
    return ValidationFailed(msg, errors=[{"loc": [loc], "msg": msg}])


def decode_content(inputs: CreateAssetInput, max_bytes: int) -> bytes:
    """The bytes to store; PayloadTooLarge over ``max_bytes``, ValidationFailed if undecodable."""
    if inputs.content_text is not None:
        if len(inputs.content_text) > max_bytes:
            raise _too_large(max_bytes)
        try:
            data = inputs.content_text.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid("content_text", "content_text is not valid Unicode") from None
    else:
        compact = "".join((inputs.content_base64 or "").split())
        if len(compact) > 4 * -(-max_bytes // 3):
            raise _too_large(max_bytes)
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("content_base64", "content_base64 is not valid base64") from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def encode_content(mime_type: str, data: bytes) -> tuple[Literal["text", "base64"], str]:
    """Text for textual MIME types that decode as UTF-8, base64 otherwise."""
    if is_textual(mime_type):
        try:
            return "text", data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return "base64", base64.b64encode(data).decode("ascii")


def asset_out(meta: dict[str, Any], data: bytes | None) -> AssetOut:
    out = AssetOut.model_validate(meta)
    if data is None:
        return out
    encoding, content = encode_content(out.mime_type, data)
    key = "content_text" if encoding == "text" else "content_base64"
    return out.model_copy(update={"encoding": encoding, key: content})


# --------------------------------------------------------------------------- store access


def new_asset_id() -> str:
    return "ast_" + secrets.token_hex(12)


async def load_live(services: MediaServices, tenant: str, asset_id: str) -> dict[str, Any]:
    """The asset's metadata (latest version); NotFound when unknown or deleted."""
    rec = await services.store.get(tenant, KIND, asset_id)
    if rec is None or rec.data is None:
        raise NotFound("asset not found", asset_id=asset_id)
    return rec.data


async def load_with_content(
    services: MediaServices, tenant: str, asset_id: str
) -> tuple[dict[str, Any], bytes]:
    """The asset's metadata and content; NotFound when unknown or deleted."""
    meta = await load_live(services, tenant, asset_id)
    try:
        return meta, await services.blobs.get(tenant, meta["sha256"])
    except NotFound:  # deleted between the two reads
        raise NotFound("asset not found", asset_id=asset_id) from None


async def scan(
    services: MediaServices,
    tenant: str,
    *,
    after: str | None,
    want: int,
    match: Callable[[dict[str, Any]], bool] = lambda _: True,
    budget: int | None = None,
    page: int = SCAN_PAGE,
) -> tuple[list[Record], str | None, bool]:
    """Walk live assets in id order after ``after``, collecting up to ``want`` matches.

    Stops after examining ``budget`` records, if given. Returns ``(matches, last id examined,
    exhausted)``; ``exhausted`` means the end of the tenant's assets was reached.
    """
    found: list[Record] = []
    cursor, examined = after, 0
    while True:
        records = await services.store.list(tenant, KIND, after=cursor, limit=page)
        if not records:
            return found, cursor, True
        for rec in records:
            cursor, examined = rec.resource_id, examined + 1
            if rec.data is not None and match(rec.data):
                found.append(rec)
                if len(found) >= want:
                    return found, cursor, False
            if budget is not None and examined >= budget:
                return found, cursor, False


async def blob_referenced(services: MediaServices, tenant: str, sha: str) -> bool:
    found, _, _ = await scan(services, tenant, after=None, want=1, match=lambda d: d.get("sha256") == sha)
    return bool(found)


# --------------------------------------------------------------------------- handlers


async def get_asset(tctx: ToolContext, inputs: GetAssetInput) -> AssetOut:
    services, tenant = services_of(tctx), tctx.request.tenant
    if not inputs.include_content:
        return asset_out(await load_live(services, tenant, inputs.asset_id), None)
    meta, data = await load_with_content(services, tenant, inputs.asset_id)
    return asset_out(meta, data)


async def list_assets(tctx: ToolContext, inputs: ListAssetsInput) -> ListAssetsOutput:
    services, tenant, tag = services_of(tctx), tctx.request.tenant, inputs.tag
    found, last, exhausted = await scan(
        services,
        tenant,
        after=inputs.cursor,
        want=inputs.limit + 1,
        match=(lambda d: tag in d.get("tags", ())) if tag else (lambda _: True),
        budget=LIST_SCAN_BUDGET if tag else None,
        page=SCAN_PAGE if tag else inputs.limit + 1,
    )
    next_cursor: str | None = None if exhausted else last
    if len(found) > inputs.limit:
        found = found[: inputs.limit]
        next_cursor = found[-1].resource_id
    return ListAssetsOutput(assets=[AssetMeta.model_validate(r.data) for r in found], next_cursor=next_cursor)


async def create_asset(tctx: ToolContext, inputs: CreateAssetInput) -> AssetOut:
    services, tenant, user = services_of(tctx), tctx.request.tenant, tctx.request.user
    data = decode_content(inputs, services.max_bytes)
    sha = await trio.to_thread.run_sync(sha256_hex, data)
    asset_id = new_asset_id()
    meta: dict[str, Any] = {
        "asset_id": asset_id,
        "name": inputs.name,
        "mime_type": inputs.mime_type,
        "size": len(data),
        "sha256": sha,
        "tags": inputs.tags,
        "created_at": utc_now_iso(),
        "created_by": user,
    }
    async with services.locks.hold((tenant, sha)):
        existed = await services.blobs.exists(tenant, sha)
        await services.blobs.put(tenant, data)
        try:
            await services.store.save(tenant, KIND, asset_id, meta, expected_version=0, actor=user)
        except Exception:
            if not existed:
                await discard_unrecorded_blob(services, tenant, asset_id, sha)
            raise
    return asset_out(meta, None)


async def discard_unrecorded_blob(services: MediaServices, tenant: str, asset_id: str, sha: str) -> None:
    """After a failed save, remove the blob it had just written, unless the save did commit.

    Best effort: a failure here leaves an orphan blob (harmless) rather than hiding the
    save's error. A cancelled save is not cleaned up for the same reason.
    """
    with contextlib.suppress(Exception):
        if await services.store.get(tenant, KIND, asset_id) is None:
            await services.blobs.delete(tenant, sha)


async def delete_asset(tctx: ToolContext, inputs: DeleteAssetInput) -> DeleteAssetOutput:
    services, tenant = services_of(tctx), tctx.request.tenant
    sha = (await load_live(services, tenant, inputs.asset_id))["sha256"]
    async with services.locks.hold((tenant, sha)):
        rec = await services.store.get(tenant, KIND, inputs.asset_id)  # a racing delete may have won
        if rec is None or rec.data is None:
            raise NotFound("asset not found", asset_id=inputs.asset_id)
        await services.store.save(tenant, KIND, inputs.asset_id, None, expected_version=rec.version,
                                  actor=tctx.request.user)
        if not await blob_referenced(services, tenant, sha):
            await services.blobs.delete(tenant, sha)
    return DeleteAssetOutput(asset_id=inputs.asset_id)


# --------------------------------------------------------------------------- MCP resources


def resource_uri(asset_id: str) -> str:
    return f"{RESOURCE_PREFIX}{asset_id}"


async def list_asset_resources(services: MediaServices, tenant: str) -> list[dict[str, Any]]:
    """MCP ``resources/list`` entries for the tenant's first :data:`MAX_RESOURCES` assets."""
    found, _, _ = await scan(services, tenant, after=None, want=MAX_RESOURCES, page=MAX_RESOURCES)
    return [
        {"uri": resource_uri(r.resource_id), "name": d["name"], "mimeType": d["mime_type"], "size": d["size"]}
        for r in found
        if (d := r.data) is not None
    ]


async def read_asset_resource(services: MediaServices, tenant: str, uri: str) -> dict[str, Any]:
    """MCP ``resources/read`` contents for ``media://assets/<asset_id>``; NotFound otherwise."""
    asset_id = uri.removeprefix(RESOURCE_PREFIX) if uri.startswith(RESOURCE_PREFIX) else ""
    if not _ASSET_ID.fullmatch(asset_id):
        raise NotFound("resource not found", uri=uri)
    try:
        meta, data = await load_with_content(services, tenant, asset_id)
    except NotFound:
        raise NotFound("resource not found", uri=uri) from None
    encoding, content = encode_content(meta["mime_type"], data)
    return {"uri": uri, "mimeType": meta["mime_type"], "text" if encoding == "text" else "blob": content}


# --------------------------------------------------------------------------- definition

_READ = Annotations(read_only=True, idempotent=True)

MEDIA_V2 = ToolDefinition(
    tool_id="media_v2",
    title="Media assets",
    description="Store, list, fetch and delete media assets (text or binary) for your tenant.",
    version="2.0.0",
    scopes=(
        Scope(
            name="media.read",
            description="Read asset metadata and content.",
            operations=(
                Operation("get_asset", "Fetch one asset's metadata and (by default) its content: "
                          "text for UTF-8 text/JSON types, base64 otherwise.",
                          GetAssetInput, AssetOut, get_asset, _READ, "Get asset"),
                Operation("list_assets", "List asset metadata in pages (20 by default, up to 100), "
                          "optionally only those with a tag.",
                          ListAssetsInput, ListAssetsOutput, list_assets, _READ, "List assets"),
            ),
        ),
        Scope(
            name="media.write",
            description="Create and delete assets.",
            operations=(
                Operation("create_asset", "Store a new asset from content_text or content_base64; "
                          "returns its metadata (without the content).",
                          CreateAssetInput, AssetOut, create_asset, Annotations(), "Create asset"),
                Operation("delete_asset", "Delete an asset. Its content is removed once no other "
                          "asset uses the same bytes.",
                          DeleteAssetInput, DeleteAssetOutput, delete_asset,
                          Annotations(destructive=True, idempotent=True), "Delete asset"),
            ),
        ),
    ),
)


def media_v2_tool() -> ToolDefinition:
    """The ``media_v2`` tool definition (immutable; shared)."""
    return MEDIA_V2
