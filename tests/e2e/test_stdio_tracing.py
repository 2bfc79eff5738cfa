"""The stdio door traces too: ``_meta.traceparent`` is the parent; spans go to stderr, never stdout."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

import trio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.harness import gateway_env

CHILDREN = {"northstar.gate_chain.decide", "northstar.tool.call", "northstar.audit.commit"}


def spans_in(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"span_id"' in line:
            out.append(json.loads(line))
    return out


async def test_a_stdio_call_is_one_span_tree_under_meta_traceparent(tmp_path: Path) -> None:
    trace_id, span_id = f"{secrets.randbits(128) | 1:032x}", f"{secrets.randbits(64) | 1:016x}"
    stderr = tmp_path / "stderr.log"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "northstar", "stdio", "--tenant", "acme", "--user", "alice"],
        env=gateway_env(tmp_path / "data", {"OTEL_TRACES_EXPORTER": "console", "NORTHSTAR_LOG_LEVEL": "WARNING"}))
    with stderr.open("w") as errlog, trio.fail_after(60):
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", cache=None) as client:
            result = await client.call_tool("echo__ping", {"message": "hi"},
                                            meta={"traceparent": f"00-{trace_id}-{span_id}-01"})
            assert not result.is_error  # stdout carried only JSON-RPC: the client parsed every line
    with trio.fail_after(30):  # the batch processor flushes when the runtime stops
        while not any(s["name"] == "tools/call" for s in spans_in(stderr)):
            await trio.sleep(0.05)
    spans = [s for s in spans_in(stderr) if s["context"]["trace_id"] == f"0x{trace_id}"]
    [door] = [s for s in spans if s["name"] == "tools/call"]
    assert door["parent_id"] == f"0x{span_id}"
    assert door["attributes"]["northstar.door"] == "stdio"
    assert door["attributes"]["northstar.outcome"] == "ok"
    children = {s["name"] for s in spans if s["parent_id"] == door["context"]["span_id"]}
    assert children == CHILDREN
