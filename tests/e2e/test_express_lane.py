"""The express lane in a real gateway: the SDK's Streamable HTTP client is answered by it (its
counter moves), every other request still reaches Hypercorn, and ``http_express = false`` serves
the same clients with the lane off."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.clients import mcp_client
from tests.harness import GatewayProcess, admin_headers


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def counter(url: str, name: str) -> float | None:
    text = httpx2.get(f"{url}/metrics", headers=admin_headers(url), timeout=10).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.fixture(scope="module")
def lane_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("express-off"), env={"NORTHSTAR_HTTP_EXPRESS": "false"}) as gw:
        yield gw


async def call_echo(gw: GatewayProcess, kind: str, data_dir: Path) -> str:
    async with mcp_client(kind, gw.url, data_dir, fresh("lane"), "u") as client:
        tools = await client.list_tools()
        assert "echo__ping" in {t.name for t in tools.tools}
        result = await client.call_tool("echo__ping", {"message": "through the lane"})
        assert not result.is_error, result
        return str(result.structured_content)


@pytest.mark.parametrize("kind", ["streamable-2025", "streamable-2026"])
async def test_the_sdk_client_is_answered_by_the_lane(gateway: GatewayProcess, kind: str, tmp_path: Path) -> None:
    before = counter(gateway.url, "northstar_http_express_requests_total") or 0.0
    assert "through the lane" in await call_echo(gateway, kind, tmp_path)
    after = counter(gateway.url, "northstar_http_express_requests_total")
    assert after is not None and after >= before + 3  # initialize (+ initialized) , list, call at least


@pytest.mark.parametrize("kind", ["streamable-2025", "streamable-2026", "sse"])
async def test_with_the_lane_off_the_same_clients_are_served(lane_off: GatewayProcess, kind: str,
                                                             tmp_path: Path) -> None:
    assert "through the lane" in await call_echo(lane_off, kind, tmp_path)
    assert counter(lane_off.url, "northstar_http_express_requests_total") is None


async def test_other_requests_are_handed_to_hypercorn(gateway: GatewayProcess, tmp_path: Path) -> None:
    before = counter(gateway.url, "northstar_http_express_handovers_total") or 0.0
    assert "through the lane" in await call_echo(gateway, "sse", tmp_path)  # GET /sse, POST /messages/
    after = counter(gateway.url, "northstar_http_express_handovers_total")
    assert after is not None and after >= before + 2
