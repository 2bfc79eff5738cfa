"""Real MCP clients (the official SDK's) for every door of a running gateway."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.harness import admin_headers, gateway_env

TRANSPORTS = ("stdio", "sse", "streamable-2025", "streamable-2026")


def identity(tenant: str, user: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Id": user}


@contextlib.asynccontextmanager
async def mcp_client(
    kind: str, url: str, data_dir: Path, tenant: str, user: str, headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """An initialised SDK client over ``kind`` with the given identity."""
    hdrs = {**identity(tenant, user), **(headers or {})}
    if kind == "stdio":
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "northstar", "stdio", "--tenant", tenant, "--user", user],
            env=gateway_env(data_dir, env),
        )
        async with Client(params, mode="legacy", cache=None) as client:
            yield client
    elif kind == "sse":
        async with Client(sse_client(f"{url}/sse", headers=hdrs), mode="legacy", cache=None) as client:
            yield client
    else:
        mode = "legacy" if kind == "streamable-2025" else "auto"
        async with httpx2.AsyncClient(headers=hdrs, timeout=30) as http, Client(
            streamable_http_client(f"{url}/mcp", http_client=http), mode=mode, cache=None
        ) as client:
            yield client


def error_of(result: Any) -> dict[str, Any]:
    """The canonical envelope fields of an MCP isError result (``_meta`` and the text agree)."""
    assert result.is_error, result
    fields = dict((result.meta or {})["northstar/error"])
    assert json.loads(result.content[0].text)["error"] == fields
    assert result.structured_content is None
    return fields


def grant(url: str, tenant: str, user: str, firearm: str) -> None:
    resp = httpx2.post(f"{url}/v1/firearms/grants", headers=admin_headers(url),
                       json={"tenant": tenant, "user": user, "firearm": firearm, "reason": "test"})
    assert resp.status_code == 201, resp.text


def revoke(url: str, tenant: str, user: str, firearm: str) -> None:
    resp = httpx2.delete(f"{url}/v1/firearms/grants/{tenant}/{user}/{firearm}", headers=admin_headers(url))
    assert resp.status_code == 200, resp.text


def audit(url: str, **filters: str) -> list[dict]:
    """Audit entries as an admin sees them (global ``seq``; ``tenant_seq`` beside it)."""
    resp = httpx2.get(f"{url}/v1/audit", params={**filters, "limit": "1000"}, headers=admin_headers(url))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["entries"])
