"""Issue acceptance over every door, with the official SDK's clients against a real gateway:
discovery, echo, media round trip, schema violations, unknown tools, and firearms."""

from __future__ import annotations

import re
import uuid

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.clients import TRANSPORTS, audit, error_of, grant, mcp_client
from tests.harness import GatewayProcess, northstar_cli

WIRE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MEDIA_OPS = {"media_v2__get_asset", "media_v2__list_assets", "media_v2__create_asset", "media_v2__delete_asset"}
pytestmark = pytest.mark.parametrize("kind", TRANSPORTS)


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_discovery(gateway: GatewayProcess, kind: str) -> None:
    async with mcp_client(kind, gateway.url, gateway.data_dir, fresh("t"), "alice") as client:
        tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    assert "echo__ping" in names
    assert names >= MEDIA_OPS
    for tool in tools:
        assert WIRE.fullmatch(tool.name), tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        meta = tool.meta or {}
        assert meta["northstar/canonical_name"].replace(".", "__") == tool.name
        assert meta["northstar/tool_id"] in ("echo", "media_v2")
    create = next(t for t in tools if t.name == "media_v2__create_asset")
    assert create.meta["northstar/scope"] == "media.write"
    assert create.meta["northstar/firearm"] == "firearm.media.write"
    assert create.annotations is not None and create.annotations.read_only_hint is False


async def test_echo_by_wire_and_canonical_name(gateway: GatewayProcess, kind: str) -> None:
    async with mcp_client(kind, gateway.url, gateway.data_dir, fresh("t"), "alice") as client:
        result = await client.call_tool("echo__ping", {"message": "hello"})
        assert not result.is_error
        assert result.structured_content["pong"] is True
        assert result.structured_content["message"] == "hello"
        again = await client.call_tool("echo.ping", {"message": "dotted"})
        assert not again.is_error and again.structured_content["message"] == "dotted"


async def test_schema_violation_is_an_error_result_and_nothing_runs(gateway: GatewayProcess, kind: str) -> None:
    tenant, user = fresh("t"), fresh("u")
    # Licensed on every door (stdio reads the grant at start): an unlicensed caller would get
    # firearm_required first and learn nothing of the schema (the firearm gate comes first).
    grant(gateway.url, tenant, user, "firearm.media.write")
    async with mcp_client(kind, gateway.url, gateway.data_dir, tenant, user) as client:
        bad = await client.call_tool("media_v2__create_asset", {"name": "x", "mime_type": 42})
        assert bad.is_error
        assert error_of(bad)["code"] == "validation_error"
        listed = await client.call_tool("media_v2__list_assets", {})
        assert listed.structured_content["assets"] == []


async def test_unknown_tool_is_a_jsonrpc_invalid_params(gateway: GatewayProcess, kind: str) -> None:
    async with mcp_client(kind, gateway.url, gateway.data_dir, fresh("t"), "alice") as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("no_such__tool", {})
    assert info.value.code == -32602


async def test_firearm_flow(gateway: GatewayProcess, kind: str) -> None:
    """Write denied without the firearm (tool ran 0 times, one deny record), read open,
    grant -> write succeeds and reads back."""
    tenant, user = fresh("t"), fresh("u")
    args = {"name": "note.txt", "mime_type": "text/plain", "content_text": "hi", "tags": ["demo"]}
    async with mcp_client(kind, gateway.url, gateway.data_dir, tenant, user) as client:
        denied = await client.call_tool("media_v2__create_asset", args)
        assert denied.is_error
        err = error_of(denied)
        assert err["code"] == "firearm_required"
        assert err["details"] == {"scope": "media.write", "firearm": "firearm.media.write"}
        read = await client.call_tool("media_v2__list_assets", {})
        assert not read.is_error and read.structured_content["assets"] == []
    denies = audit(gateway.url, tenant=tenant, user=user, decision="deny")
    assert len(denies) == 1 and denies[0]["gate"] == "firearm" and denies[0]["transport"] == transport_name(kind)
    assert not [e for e in audit(gateway.url, tenant=tenant, user=user) if e.get("event") == "outcome"]

    if kind == "stdio":  # a new stdio process picks up the grant made through the CLI
        done = northstar_cli(gateway.data_dir, "firearms", "grant", tenant, user, "firearm.media.write")
        assert done.returncode == 0, done.stderr
    else:
        grant(gateway.url, tenant, user, "firearm.media.write")
    async with mcp_client(kind, gateway.url, gateway.data_dir, tenant, user) as client:
        created = await client.call_tool("media_v2__create_asset", args)
        assert not created.is_error, created.structured_content
        asset_id = created.structured_content["asset_id"]
        got = await client.call_tool("media_v2__get_asset", {"asset_id": asset_id})
        assert got.structured_content["content_text"] == "hi"
        listed = await client.call_tool("media_v2__list_assets", {"tag": "demo"})
        assert [a["asset_id"] for a in listed.structured_content["assets"]] == [asset_id]


def transport_name(kind: str) -> str:
    return {"stdio": "stdio", "sse": "sse"}.get(kind, "streamable_http")


@pytest.fixture
def http_kind(kind: str) -> str:
    # A sync fixture: pytest-trio drops the reason of a skip raised inside an async test.
    if kind == "stdio":
        pytest.skip("stdio has no Origin header: the DNS-rebinding check is an HTTP one")
    return kind


async def test_bad_origin_is_403(gateway: GatewayProcess, http_kind: str) -> None:
    kind = http_kind
    path = "/sse" if kind == "sse" else "/mcp"
    async with httpx2.AsyncClient() as http:
        resp = await http.post(f"{gateway.url}{path}", headers={"Origin": "http://evil.example"},
                               json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert resp.status_code == 403
