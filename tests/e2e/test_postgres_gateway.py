"""The whole gateway on PostgreSQL (the multi-replica store): MCP over Streamable HTTP,
the firearm flow, drafts with conflicts, and a verified audit chain."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.clients import error_of, grant, mcp_client
from tests.harness import GatewayProcess
from tests.pg import base_url, fresh_schema, pg_unavailable_reason, schema_url

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(reason)
    schema = fresh_schema("e2e")
    data: Path = tmp_path_factory.mktemp("pg")
    try:
        with GatewayProcess(data, env={"NORTHSTAR_STORE_URL": schema_url(base_url(), schema)}) as gw:
            yield gw
    finally:
        drop = f"DROP SCHEMA IF EXISTS {schema} CASCADE"
        subprocess.run(["psql", base_url(), "-c", drop], capture_output=True, check=False, timeout=30)


async def test_mcp_and_firearms_on_postgres(pg_gateway: GatewayProcess) -> None:
    args = {"name": "pg.txt", "mime_type": "text/plain", "content_text": "on postgres"}
    async with mcp_client("streamable-2025", pg_gateway.url, pg_gateway.data_dir, "pg-t", "pg-u") as client:
        assert (await client.call_tool("echo__ping", {"message": "pg"})).structured_content["message"] == "pg"
        denied = await client.call_tool("media_v2__create_asset", args)
        assert error_of(denied)["code"] == "firearm_required"
        grant(pg_gateway.url, "pg-t", "pg-u", "firearm.media.write")
        created = await client.call_tool("media_v2__create_asset", args)
        assert not created.is_error
        got = await client.call_tool("media_v2__get_asset", {"asset_id": created.structured_content["asset_id"]})
        assert got.structured_content["content_text"] == "on postgres"


def test_drafts_and_audit_on_postgres(pg_gateway: GatewayProcess) -> None:
    url = f"{pg_gateway.url}/v1/drafts/pgdraft"
    spec = {"tool_id": "pg_echo", "title": "PG echo", "description": "Echo on postgres", "scopes": [
        {"name": "pg_echo.use", "description": "use", "operations": [
            {"name": "say", "description": "Say it", "wraps": "echo.ping"}]}]}
    first = httpx2.put(url, json={"expected_version": 0, "spec": spec})
    assert first.status_code == 201, first.text
    stale = httpx2.put(url, json={"expected_version": 0, "spec": spec})
    assert stale.status_code == 409 and stale.json()["error"]["details"]["current_version"] == 1
    verify = httpx2.get(f"{pg_gateway.url}/v1/audit/verify", headers=pg_gateway.admin_headers).json()
    assert verify["ok"] is True and verify["count"] >= 1
