"""Cancellation crosses every door into the tool actor and is audited.

A client that gives up on a slow call (the SDK client sends ``notifications/cancelled``;
over the 2026-07-28 protocol it closes the stream) cancels the tool's work; the gate chain
records the outcome ``cancelled``, and the next call on the same client works.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.e2e.clients import TRANSPORTS, audit, error_of, mcp_client
from tests.harness import GatewayProcess

DIAG = {"NORTHSTAR_ENABLE_DIAGNOSTICS": "true"}


@pytest.fixture(scope="module")
def diag_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data: Path = tmp_path_factory.mktemp("diag")
    with GatewayProcess(data, env=DIAG) as gw:
        yield gw


async def wait_for_outcome(url: str, tenant: str, user: str) -> dict:
    # The gateway audits the cancellation asynchronously, after the client has moved on;
    # poll its audit API (bounded) rather than guess a delay.
    with trio.fail_after(15):
        while True:
            records = [e for e in audit(url, tenant=tenant, user=user) if e.get("tool") == "diagnostics"]
            if records:
                return records[0]
            await trio.sleep(0.05)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_abandoned_call_is_cancelled_and_audited(diag_gateway: GatewayProcess, kind: str) -> None:
    tenant, user = f"t-{uuid.uuid4().hex[:8]}", "canceller"
    env_data = diag_gateway.data_dir
    async with mcp_client(kind, diag_gateway.url, env_data, tenant, user, env=DIAG) as client:
        with trio.move_on_after(1.0) as scope:
            await client.call_tool("diagnostics__sleep", {"seconds": 60})
        assert scope.cancelled_caught, "the slow call should still have been running"
        record = await wait_for_outcome(diag_gateway.url, tenant, user)
        assert record["outcome"] == "cancelled"
        assert record["latency_ms"] < 30_000
        after = await client.call_tool("echo__ping", {"message": "still here"})
        assert not after.is_error and after.structured_content["message"] == "still here"


async def test_crashing_tool_gives_a_clean_error_and_is_restarted(diag_gateway: GatewayProcess) -> None:
    async with mcp_client("streamable-2025", diag_gateway.url, diag_gateway.data_dir, "t-crash", "u") as client:
        crashed = await client.call_tool("diagnostics__crash", {"message": "on purpose"})
        assert crashed.is_error
        assert error_of(crashed)["code"] == "tool_error"
        assert "on purpose" not in str(crashed.structured_content)
        slept = await client.call_tool("diagnostics__sleep", {"seconds": 0})
        assert not slept.is_error and slept.structured_content == {"slept": 0.0}
