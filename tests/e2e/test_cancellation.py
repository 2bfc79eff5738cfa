"""Cancellation crosses every door into the tool actor and is audited.

A client that gives up on a slow call (the SDK client sends ``notifications/cancelled``;
over the 2026-07-28 protocol it closes the stream) cancels the tool's work; the gate chain
records the outcome ``cancelled``, and the next call on the same client works.

Over stdio the door answers ``initialize`` before the runtime is ready; a call cancelled
while it still waits for start-up never reaches the gate chain: it never runs and has no
audit record (``test_a_call_cancelled_before_stdio_startup_never_runs``). The abandoned-call
test therefore waits for ``tools/list`` (answered once the runtime is ready) before its call:
it must not depend on start-up finishing within its one second.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.clients import TRANSPORTS, audit, error_of, mcp_client
from tests.harness import GatewayProcess, gateway_env

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
        await client.list_tools()  # the runtime is ready (stdio answers initialize before it is)
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


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def test_a_call_cancelled_before_stdio_startup_never_runs(tmp_path: Path) -> None:
    """Deterministic: start-up is held (the test holds the database's write lock, which the
    store's migration step waits for), the call and its cancel are written meanwhile, then
    start-up is let go. The call is never answered, never run and never audited; the process
    serves the next calls and exits at once when stdin closes (no 60 s sleep holding it)."""
    subprocess.run([sys.executable, "-m", "northstar", "audit", "verify"], env=gateway_env(tmp_path), check=True,
                   capture_output=True, timeout=60)  # creates and migrates the database
    env = gateway_env(tmp_path, {**DIAG, "NORTHSTAR_SQLITE_BUSY_TIMEOUT_MS": "120000"})
    lock = sqlite3.connect(tmp_path / "northstar.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # start-up cannot finish while this is held
    proc = subprocess.Popen([sys.executable, "-m", "northstar", "stdio", "--tenant", "t-early", "--user", "u"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(line({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        proc.stdin.write(line({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        proc.stdin.write(line({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                               "params": {"name": "diagnostics__sleep", "arguments": {"seconds": 60}}}))
        proc.stdin.write(line({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}))
        proc.stdin.flush()
        lock.execute("COMMIT")  # start-up may go on now; the cancel is already in the pipe
        proc.stdin.write(line({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        proc.stdin.write(line({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                               "params": {"name": "echo__ping", "arguments": {"message": "after"}}}))
        proc.stdin.flush()
        answers: dict[Any, dict[str, Any]] = {}
        while 3 not in answers:
            raw = proc.stdout.readline()
            assert raw, proc.stderr.read().decode()[-3000:] if proc.stderr else "stdout closed"
            message = json.loads(raw)
            if "id" in message:
                answers[message["id"]] = message
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        answers.update({m["id"]: m for m in map(json.loads, proc.stdout.read().splitlines()) if "id" in m})
    finally:
        lock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 1 not in answers  # a cancelled request is never answered
    assert "result" in answers[0] and "result" in answers[2]
    assert answers[3]["result"]["structuredContent"]["message"] == "after"
    with sqlite3.connect(tmp_path / "northstar.db") as db:
        tools = [json.loads(r)["tool"] for (r,) in db.execute("SELECT record FROM audit_log WHERE tenant = 't-early'")]
    assert tools == ["echo"]  # no decision was made for the cancelled call, so no record either
