"""Smoke test of the benchmark suite (``python -m bench``) without timing anything.

Starts the real gateway (in its default ``api_key`` mode, called with a key minted by the CLI),
the SDK baseline and the ceiling, prepares the ``session-2025`` flow (initialize +
initialized, so both JSON and SSE framings are decoded) and runs the suite's correctness check
against each; prepares the federation section's direct and governed upstream calls
(``bench/upstream.py``; ContextForge never runs here); checks the generated wrk scripts' shape
and the wrk output parser on a canned run. Catches a broken bench in CI in seconds, without
wrk timing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx2
import pytest

from bench import procs, protocol, report, upstream, wrk
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
            prepared = protocol.prepare(client, "session-2025", kind, server.url, procs.auth_for(server))
            assert (prepared.session_id is None) == (kind == "ceiling")
            content = protocol.precheck(client, server.url, prepared.request)
            assert content["pong"] is True and content["message"] == "hi"
            lua = cell_script(prepared).render()
            assert "function response(" in lua and prepared.request.path in lua
            assert ("Authorization" in lua) == (kind == "gateway")  # every timed request carries the key
        gateway = servers["gateway"]
        anonymous = protocol.stateless_request("/mcp/stateless")
        refused = client.post(f"{gateway.url}{anonymous.path}", content=anonymous.body(1), headers=anonymous.headers)
        assert refused.status_code == 401  # the default deployment: no key, no call
        # the stateless and 2026-07-28 requests are answered correctly by the gateway too
        for flow in ("stateless", "modern-2026"):
            prepared = protocol.prepare(client, flow, "gateway", gateway.url, gateway.caller_headers())
            protocol.precheck(client, servers["gateway"].url, prepared.request, request_id=5)
        with pytest.raises(protocol.CheckFailed, match=r"isError|no result|HTTP"):
            wrong = protocol.CallRequest("/mcp/stateless", protocol.base_headers(protocol.HANDSHAKE),
                                         {"name": "echo__nope", "arguments": {}})
            protocol.precheck(client, servers["gateway"].url, wrong)


def test_upstream_section_prepares_the_direct_and_the_governed_call(tmp_path: Path) -> None:
    upstream_server = upstream.upstream_server(tmp_path, core=None)
    gateway = procs.gateway(tmp_path, name="northstar", core=None)
    relay = upstream.relay_server(tmp_path, upstream_server, core=None)
    with procs.running(upstream_server, gateway, relay), httpx2.Client(timeout=60) as client:
        direct = upstream.direct_target(client, upstream_server)
        assert protocol.precheck(client, upstream_server.url, direct.request)["pong"] is True
        assert protocol.precheck(client, relay.url, direct.request, request_id=3)["pong"] is True  # the floor
        paced = upstream.replace(cell_script(direct), delay_ms=2).render()
        assert "function delay()\n  return 2\nend" in paced and "function delay" not in cell_script(direct).render()
        governed = upstream.northstar_target(client, gateway, upstream_server, "stateless")
        assert governed.request.params["name"] == upstream.NORTHSTAR_TOOL
        assert protocol.precheck(client, gateway.url, governed.request, request_id=9)["message"] == "hi"
        assert "Authorization" in cell_script(governed).render()
        assert gateway.cpu_s() > 0
    cells = [{"server": kind, "round": 1, "valid": True, "error": None,
              "c1": {"rps": 100.0, "p50_ms": p50, "p99_ms": 2.0, "cpu_us_per_call": {"gateway": 900}},
              "c32": {"rps": rps, "p50_ms": 5.0, "p99_ms": 9.0, "cpu_us_per_call": {"gateway": 800}}}
             for kind, p50, rps in (("direct", 0.7, 1500.0), ("northstar", 1.5, 1000.0))]
    paced = {"server": "direct-paced", "round": 1, "valid": True, "error": None, "pause_ms": 1,
             "c1": {"rps": 90.0, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_us_per_call": {"upstream": 800}}}  # c=1 only
    cells.append(paced)
    summary = upstream.summarize(cells)
    assert summary["ratios"]["northstar_p50_c1_minus_direct_ms"]["median"] == pytest.approx(0.8)
    assert summary["ratios"]["northstar_p50_c1_minus_paced_ms"]["median"] == pytest.approx(0.5)
    assert summary["medians"]["direct-paced"]["c32_rps"] is None
    assert summary["ratios"]["northstar_throughput_c32_vs_direct"]["median"] == pytest.approx(1000 / 1500)
    section = {"cells": cells, "summary": summary, "unavailable": {"contextforge": "not installed"}}
    text = report.upstreams_md(section)
    assert "unavailable: not installed" in text and "northstar c=32 req/s vs direct" in text


def test_the_paced_direct_call_waits_as_long_as_the_gateway_added(tmp_path: Path) -> None:
    prepared = protocol.Prepared(upstream.tool_request("/mcp", upstream.TOOL, {"Mcp-Session-Id": "s"}, "session-2025"),
                                 "s")
    target = upstream.Target("direct-paced", "http://127.0.0.1:9/mcp", None, concurrency=(1,), prepared=prepared)
    cell = {"valid": True, "c1": {"p50_ms": 0.5}}
    assert not upstream.pace(target, [{**cell, "server": "direct", "round": 1}], 1, tmp_path)  # no northstar
    cells = [{**cell, "server": "direct", "round": 2},
             {"server": "northstar", "round": 2, "valid": True, "c1": {"p50_ms": 3.1}}]
    assert upstream.pace(target, cells, 2, tmp_path) and target.pause_ms == 3  # 2.6 ms, whole ms
    assert target.script is not None and "return 3" in target.script.read_text()
    cells[1]["c1"]["p50_ms"] = 0.6  # a gap under half a millisecond still pauses: 1 ms, wrk's least
    assert upstream.pace(target, cells, 2, tmp_path) and target.pause_ms == 1
