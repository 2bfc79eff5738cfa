"""The gate order on a real gateway: a caller without the firearm learns nothing of the schema.

``media_v2.create_asset`` needs ``firearm.media.write``. Called with arguments that violate its
input schema, an unlicensed caller gets ``firearm_required`` (not a validation report naming
the fields), on REST and over MCP; once licensed, the same arguments get the validation error.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.clients import audit, error_of, grant, identity, mcp_client
from tests.harness import GatewayProcess

BAD_ARGS = {"name": 7, "mime_type": ["x"], "surprise": True}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data: Path = tmp_path_factory.mktemp("gates")
    with GatewayProcess(data) as gateway:
        yield gateway


def rest_call(gw: GatewayProcess, tenant: str) -> httpx2.Response:
    return httpx2.post(f"{gw.url}/v1/tools/media_v2.create_asset/call", json={"arguments": BAD_ARGS},
                       headers=identity(tenant, "u"))


async def test_firearm_before_input_on_rest_and_mcp(gw: GatewayProcess) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    denied = rest_call(gw, tenant)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "firearm_required"
    assert "errors" not in denied.json()["error"]["details"]  # nothing about the arguments
    async with mcp_client("streamable-2025", gw.url, gw.data_dir, tenant, "u") as client:
        result = await client.call_tool("media_v2__create_asset", BAD_ARGS)
        assert error_of(result)["code"] == "firearm_required"
        records = [r for r in audit(gw.url, tenant=tenant) if r.get("event") == "decision"]
        assert [(r["decision"], r["gate"]) for r in records] == [("deny", "firearm")] * 2
        grant(gw.url, tenant, "u", "firearm.media.write")
        licensed = await client.call_tool("media_v2__create_asset", BAD_ARGS)
        assert error_of(licensed)["code"] == "validation_error"  # now it may learn what is wrong
    assert rest_call(gw, tenant).json()["error"]["code"] == "validation_error"
