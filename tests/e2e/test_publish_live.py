"""Publishing goes live without a restart: connected MCP clients hear list_changed, see the
tool, and call it under its overlay's firearm binding; its audit records name the package
version and hash it ran."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.clients import audit, error_of, grant
from tests.harness import GatewayProcess


def notes_spec(tool_id: str) -> dict[str, Any]:
    return {
        "tool_id": tool_id, "title": "Notes", "description": "Plain-text notes kept as media assets.",
        "version": "1.0.0",
        "scopes": [
            {"name": f"{tool_id}.write", "description": "Write notes.", "firearm": f"firearm.{tool_id}.write",
             "operations": [{"name": "add_note", "description": "Add a plain-text note.",
                             "wraps": "media_v2.create_asset",
                             "input": {"presets": {"mime_type": "text/plain"}, "hide": ["content_base64"],
                                       "restrict": {"name": {"maxLength": 80}}}}]},
            {"name": f"{tool_id}.read", "description": "Read notes.",
             "operations": [{"name": "list_notes", "description": "List notes.",
                             "wraps": "media_v2.list_assets"}]},
        ],
    }


async def test_publish_is_live_for_connected_clients(gateway: GatewayProcess) -> None:
    tool_id = f"notes_{uuid.uuid4().hex[:6]}"
    tenant, user = f"t-{uuid.uuid4().hex[:6]}", "writer"
    changed = trio.Event()

    async def on_message(message: Any) -> None:
        if getattr(getattr(message, "root", message), "method", None) == "notifications/tools/list_changed":
            changed.set()

    headers = {"X-Tenant-Id": tenant, "X-User-Id": user}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, Client(
        streamable_http_client(f"{gateway.url}/mcp", http_client=http), mode="legacy", cache=None,
        message_handler=on_message,
    ) as client:
        before = {t.name for t in (await client.list_tools()).tools}
        assert f"{tool_id}__add_note" not in before

        put = httpx2.put(f"{gateway.url}/v1/drafts/{tool_id}", headers=gateway.admin_headers,
                         json={"expected_version": 0, "spec": notes_spec(tool_id)})
        assert put.status_code == 201, put.text
        pub = httpx2.post(f"{gateway.url}/v1/drafts/{tool_id}/publish", headers=gateway.admin_headers,
                          json={"version": 1})
        assert pub.status_code == 201, pub.text
        package, overlay = pub.json()["package"], pub.json()["overlay"]
        assert overlay["package_hash"] == package["content_hash"]

        with trio.fail_after(10):
            await changed.wait()
        tools = {t.name: t for t in (await client.list_tools()).tools}
        add = tools[f"{tool_id}__add_note"]
        assert add.meta["northstar/version"] == "1.0.0"
        assert add.meta["northstar/package_hash"] == package["content_hash"]
        assert add.meta["northstar/firearm"] == f"firearm.{tool_id}.write"
        assert "mime_type" not in add.input_schema["properties"]

        args = {"name": "hello", "content_text": "first note"}
        denied = await client.call_tool(f"{tool_id}__add_note", args)
        assert error_of(denied)["code"] == "firearm_required"
        grant(gateway.url, tenant, user, f"firearm.{tool_id}.write")
        added = await client.call_tool(f"{tool_id}__add_note", args)
        assert not added.is_error, added.structured_content
        assert added.structured_content["mime_type"] == "text/plain"

    records = [e for e in audit(gateway.url, tenant=tenant, user=user) if e.get("tool") == tool_id]
    assert records and all(r["package_hash"] == package["content_hash"] for r in records)
    assert {r["tool_version"] for r in records} == {"1.0.0"}

    # The package carries no policy; the overlay references it.
    pkg = httpx2.get(f"{gateway.url}/v1/registry/packages/{tool_id}/1.0.0").json()
    assert "firearm" not in str(pkg.get("spec", {})) and "kpis" not in pkg.get("spec", {})
    assert pkg["content_hash"] == package["content_hash"]
