"""Smoke test of the benchmark suite (``python -m bench``) without timing anything.

Starts the real gateway, the SDK baseline and the ceiling, prepares the ``session-2025`` flow
(initialize + initialized, so both JSON and SSE framings are decoded) and runs the suite's
correctness check against each; checks the generated wrk script's shape and the wrk output
parser on a canned run. Catches a broken bench in CI in seconds, without wrk timing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2
import pytest

from bench import procs, protocol, wrk
from bench.flows import cell_script

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None,
                                reason="wrk is not installed (python -m bench installs it: apt-get install wrk)")

CANNED = """\
Running 3s test @ http://127.0.0.1:9/mcp
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.12ms    1.02ms  20.00ms   90.00%
    Req/Sec     6.25k   300.00     6.80k    80.00%
  Latency Distribution
     50%  812.00us
     75%    5.30ms
     90%    5.80ms
     99%    1.10s
  18750 requests in 3.00s, 10.00MB read
Requests/sec:   6250.00
Transfer/sec:      3.33MB
BENCH good=18750 bad=0 requests=18750 duration_us=3000123 errors=0 p50_us=812 p99_us=1100000
"""


def test_wrk_output_is_parsed() -> None:
    result = wrk.parse(CANNED, 32)
    assert result.valid, result.problems
    assert (result.rps, result.requests, result.good) == (6250.0, 18750, 18750)
    assert result.p50_ms == pytest.approx(0.812) and result.p99_ms == pytest.approx(1100.0)
    bad = wrk.parse(CANNED.replace("bad=0", "bad=3") + "  Non-2xx or 3xx responses: 3\n", 32)
    assert not bad.valid and len(bad.problems) == 2
    assert not wrk.parse(CANNED.split("BENCH")[0], 32).valid  # a broken script prints no BENCH line


def test_sse_and_json_framings_decode() -> None:
    reply = {"jsonrpc": "2.0", "id": 7, "result": {}}
    assert protocol.sse_messages(f"event: message\ndata: {protocol.compact(reply)}\n\n") == [reply]


def test_flow_preparation_and_checks_against_real_servers(tmp_path: Path) -> None:
    servers = {"gateway": procs.gateway(tmp_path, core=None),
               "baseline-json": procs.baseline(tmp_path, core=None),
               "baseline-sse": procs.baseline(tmp_path, json_response=False, core=None),
               "ceiling": procs.ceiling(tmp_path, core=None)}
    with procs.running(*servers.values()), httpx2.Client(timeout=30) as client:
        for kind, server in servers.items():
            prepared = protocol.prepare(client, "session-2025", kind, server.url)
            assert (prepared.session_id is None) == (kind == "ceiling")
            content = protocol.precheck(client, server.url, prepared.request)
            assert content["pong"] is True and content["message"] == "hi"
            lua = cell_script(prepared).render()
            assert "function response(" in lua and prepared.request.path in lua
        # the stateless and 2026-07-28 requests are answered correctly by the gateway too
        for flow in ("stateless", "modern-2026"):
            prepared = protocol.prepare(client, flow, "gateway", servers["gateway"].url)
            protocol.precheck(client, servers["gateway"].url, prepared.request, request_id=5)
        with pytest.raises(protocol.CheckFailed, match=r"isError|no result|HTTP"):
            wrong = protocol.CallRequest("/mcp/stateless", protocol.base_headers(protocol.HANDSHAKE),
                                         {"name": "echo__nope", "arguments": {}})
            protocol.precheck(client, servers["gateway"].url, wrong)
