"""C6. Cancellation and disconnect races at volume (1,000 operations, 24 at a time).

Clients that hang up mid-call (2026 era: a closed connection cancels the call), that send
``notifications/cancelled`` for a call in a 2025-era session, and that close a legacy SSE stream
with a call in flight. Afterwards: no crash, no traceback; every media write is whole (the asset,
its bytes, its decision and outcome records) or absent (and then never audited as ``ok``); the
gateway's descriptors and memory are back to baseline (within a stated tolerance).

``NORTHSTAR_RACE_OPS`` changes the number of operations (``make soak`` runs more).
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest

from tests.harness import GatewayProcess
from tests.reliability.kit import (
    ACCEPT_BOTH,
    HANDSHAKE,
    LegacySse,
    audit,
    connect,
    healthy,
    init_params,
    modern_request,
    open_fds,
    read_response,
    rpc,
    rss_kb,
    started,
    traceback_free,
    wait_until,
)

OPS = int(os.environ.get("NORTHSTAR_RACE_OPS", "1000"))
CONCURRENCY = 24
SESSIONS = 12
FD_TOLERANCE = 4
TASK_TOLERANCE = 4
RSS_TOLERANCE_MB = 48
SEED = 6


def content_of(i: int) -> str:
    return f"payload-{i}-" + "x" * (2000 + (i * 7919) % 60000)


@pytest.fixture(scope="module")
def cgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with started(tmp_path_factory.mktemp("races")) as gw:
        # media writes need no firearm on this gateway: the races are about the transport
        resp = httpx2.delete(f"{gw.url}/v1/firearms/bindings/media.write", headers=gw.admin_headers)
        assert resp.status_code == 200, resp.text
        yield gw
    traceback_free(gw)


def raw_post(gw: GatewayProcess, path: str, body: dict[str, Any], headers: dict[str, str]) -> socket.socket:
    payload = json.dumps(body).encode()
    head = {"Host": f"127.0.0.1:{gw.port}", "Content-Type": "application/json", "Accept": ACCEPT_BOTH,
            "Content-Length": str(len(payload)), **headers}
    sock = connect(gw)
    sock.sendall(f"POST {path} HTTP/1.1\r\n".encode()
                 + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n" + payload)
    return sock


def create_args(i: int) -> dict[str, Any]:
    return {"name": f"op-{i}", "mime_type": "text/plain", "content_text": content_of(i)}


class Race:
    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.rng = random.Random(SEED)
        self.sessions: list[tuple[str, str]] = []  # (tenant, session id)
        self.kinds: dict[int, str] = {}

    def open_sessions(self, http: httpx2.Client) -> None:
        for k in range(SESSIONS):
            tenant = f"race-s{k}"
            resp = http.post(f"{self.gw.url}/mcp", json=rpc("initialize", init_params(), 0),
                             headers={"Content-Type": "application/json", "Accept": ACCEPT_BOTH,
                                      "X-Tenant-Id": tenant, "X-User-Id": "u"})
            sid = resp.headers["mcp-session-id"]
            http.post(f"{self.gw.url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                      headers=self.session_headers(tenant, sid))
            self.sessions.append((tenant, sid))

    @staticmethod
    def session_headers(tenant: str, sid: str, **extra: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, "X-Tenant-Id": tenant, "X-User-Id": "u",
                "Mcp-Session-Id": sid, "MCP-Protocol-Version": HANDSHAKE, **extra}

    def plan(self) -> list[tuple[int, str, float | None]]:
        kinds = ["modern-write"] * 45 + ["modern-sleep"] * 10 + ["session-cancel"] * 35 + ["sse-close"] * 10
        delays: list[float | None] = [None, None, None, 0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.3]  # None: wait
        return [(i, self.rng.choice(kinds), self.rng.choice(delays)) for i in range(OPS)]

    def run(self, op: tuple[int, str, float | None]) -> None:
        i, kind, delay = op
        self.kinds[i] = kind
        rid = f"race-{i}"
        if kind.startswith("modern"):
            if kind == "modern-write":
                params = {"name": "media_v2__create_asset", "arguments": create_args(i)}
            else:
                params = {"name": "diagnostics__sleep", "arguments": {"seconds": 0.05}}
            body, route = modern_request("tools/call", params, i)
            sock = raw_post(self.gw, "/mcp", body, {**route, "X-Tenant-Id": f"race-m{i % 16}", "X-User-Id": "u",
                                                      "X-Request-Id": rid})
            if delay is None:  # this client waits for its answer
                assert read_response(sock, 60)[0] == 200
            else:
                time.sleep(delay)  # the moment this client gives up
            sock.close()
        elif kind == "session-cancel":
            tenant, sid = self.sessions[i % SESSIONS]
            call = rpc("tools/call", {"name": "media_v2__create_asset", "arguments": create_args(i)}, i)
            sock = raw_post(self.gw, "/mcp", call, {k: v for k, v in self.session_headers(tenant, sid).items()
                                                   if k not in ("Content-Type", "Accept")} | {"X-Request-Id": rid})
            if delay is None:  # this client waits for its answer
                assert read_response(sock, 60)[0] == 200
                sock.close()
                return
            time.sleep(delay)  # the moment this client changes its mind
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": i, "reason": "race"}}
            with httpx2.Client(timeout=30) as http:
                resp = http.post(f"{self.gw.url}/mcp", json=cancel, headers=self.session_headers(tenant, sid))
                assert resp.status_code in (202, 204), resp.text
            sock.settimeout(30)
            try:
                head = sock.recv(65536)
                assert head.startswith(b"HTTP/1.1 2"), head[:200]
            finally:
                sock.close()
        else:
            with LegacySse(self.gw, f"race-l{i % 8}") as sse:
                resp = sse.post(rpc("tools/call", {"name": "media_v2__create_asset", "arguments": create_args(i)}, i),
                                **{"X-Request-Id": rid})
                assert resp.status_code == 202
                if delay is None:  # this client waits for its answer
                    assert "result" in sse.reply(i, timeout_s=60)
                else:
                    time.sleep(delay)  # the moment this client hangs up


def gateway_state(gw: GatewayProcess) -> tuple[int, int]:
    assert gw.proc is not None
    return open_fds(gw.proc.pid), rss_kb(gw.proc.pid)


def runtime(gw: GatewayProcess) -> dict[str, int]:
    counts: dict[str, int] = httpx2.get(f"{gw.url}/v1/ops/runtime", headers=gw.admin_headers, timeout=10).json()
    return counts


def test_c6_cancellation_and_disconnect_races(cgw: GatewayProcess) -> None:
    race = Race(cgw)
    with httpx2.Client(timeout=30) as http:
        race.open_sessions(http)
        for _ in range(3):  # warm up every path once before the baseline
            http.post(f"{cgw.url}/v1/tools/media_v2.create_asset/call", json={"arguments": create_args(-1)},
                      headers={"X-Tenant-Id": "race-warm"})
        baseline_fds, baseline_rss = gateway_state(cgw)
        baseline = runtime(cgw)
        started_at = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for _ in pool.map(race.run, race.plan()):
                pass
        elapsed = time.monotonic() - started_at
        assert healthy(cgw)
        settle_at = time.monotonic()
        # bounded poll: connections, cancelled calls and sessions wind down asynchronously
        assert wait_until(lambda: gateway_state(cgw)[0] <= baseline_fds + FD_TOLERANCE, 10, interval_s=0.2), \
            (gateway_state(cgw), baseline_fds)
        fds, rss = gateway_state(cgw)
        assert (rss - baseline_rss) / 1024 < RSS_TOLERANCE_MB, (rss, baseline_rss)
        # tasks, sessions and streams: back to what they were (bounded poll, teardown is asynchronous)
        assert wait_until(lambda: runtime(cgw)["tasks"] <= baseline["tasks"] + TASK_TOLERANCE, 10, 0.2), \
            (runtime(cgw), baseline)
        after = runtime(cgw)
        assert after["sessions"] == baseline["sessions"] and after["sse_streams"] == baseline["sse_streams"]
        settled = time.monotonic() - settle_at

        # every write whole or absent
        records: dict[str, list[dict[str, Any]]] = defaultdict(list)
        tenants = {f"race-m{k}" for k in range(16)} | {t for t, _ in race.sessions} | {f"race-l{k}" for k in range(8)}
        assets: dict[str, dict[str, Any]] = {}
        for tenant in sorted(tenants):
            for entry in audit(cgw.url, tenant=tenant):
                records[entry["request_id"]].append(entry)
            cursor = None
            while True:
                args: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                page = http.post(f"{cgw.url}/v1/tools/media_v2.list_assets/call", json={"arguments": args},
                                 headers={"X-Tenant-Id": tenant}).json()["output"]
                for asset in page["assets"]:
                    assets[asset["name"]] = {**asset, "tenant": tenant}
                cursor = page["next_cursor"]
                if not cursor:
                    break
        whole = absent = committed_but_cancelled = 0
        for i in range(OPS):
            if race.kinds[i] == "modern-sleep":
                continue
            rid, asset = f"race-{i}", assets.get(f"op-{i}")
            events = {r["event"]: r for r in records.get(rid, [])}
            if asset is None:
                absent += 1
                assert events.get("outcome", {}).get("outcome") != "ok", f"op {i}: audited ok, asset missing"
                continue
            whole += 1
            assert events.get("decision", {}).get("decision") == "allow", f"op {i}: an asset without its decision"
            assert "outcome" in events, f"op {i}: an asset without its outcome record"
            if events["outcome"]["outcome"] != "ok":
                committed_but_cancelled += 1
            got = http.post(f"{cgw.url}/v1/tools/media_v2.get_asset/call",
                            json={"arguments": {"asset_id": asset["asset_id"]}},
                            headers={"X-Tenant-Id": asset["tenant"]}).json()["output"]
            assert got["content_text"] == content_of(i), f"op {i}: the asset's bytes are not whole"
        verify = http.get(f"{cgw.url}/v1/audit/verify", headers=cgw.admin_headers).json()
        assert verify["ok"], verify
    print(f"\nraces: {OPS} ops in {elapsed:.1f}s (settled in {settled:.1f}s); writes whole {whole}, "
          f"absent {absent}, committed though audited cancelled {committed_but_cancelled}; "
          f"tasks {baseline['tasks']}->{after['tasks']}, fds {baseline_fds}->{fds}, "
          f"rss {baseline_rss // 1024}->{rss // 1024} MB")
    assert whole + absent == sum(1 for k in race.kinds.values() if k != "modern-sleep")
