"""C7. SIGTERM and SIGINT with calls in flight and SSE streams open (including a client that
never reads): the gateway exits 0 within ``shutdown_grace_s + 3 s``, logs no traceback, and
leaves the store intact (SQLite integrity check, ``northstar audit verify``), with every
acknowledged write present and every started call audited.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.harness import GatewayProcess, northstar_cli
from tests.reliability.kit import (
    BASE_ENV,
    LegacySse,
    Session,
    audit,
    connect,
    grant,
    mcp_headers,
    modern_request,
    rpc,
    started,
)

GRACE_S = 2.0
BUDGET_S = GRACE_S + 3.0


def in_flight_everywhere(gw: GatewayProcess, stack: list[Any]) -> dict[str, list[str]]:
    """Open streams and start long calls on every door; returns the request ids started."""
    http = httpx2.Client(timeout=60)
    stack.append(http)
    started_ids: dict[str, list[str]] = {"sleep": [], "write": []}
    for k in range(2):  # legacy SSE streams, one with a call in flight
        sse = LegacySse(gw, f"shut-l{k}").__enter__()
        stack.append(sse)
        if k == 0:
            rid = "shut-sse-sleep"
            sse.post(rpc("tools/call", {"name": "diagnostics__sleep", "arguments": {"seconds": 120}}, 1),
                     **{"X-Request-Id": rid})
            started_ids["sleep"].append(rid)
    noread = LegacySse(gw, "shut-noread", rcvbuf=4096).__enter__()  # a client that stops reading
    stack.append(noread)
    for i in range(40):
        noread.post(rpc("tools/list", None, 100 + i))
    session = Session(http, gw.url, "shut-s").open()  # a 2025 session with its GET stream open
    stream = connect(gw)
    stack.append(stream)
    head = {**session.headers(), "Accept": "text/event-stream", "Host": f"127.0.0.1:{gw.port}"}
    stream.sendall(("GET /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n").encode())
    assert b" 200 " in stream.recv(4096)

    def post_and_forget(path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        sock = connect(gw)
        stack.append(sock)
        payload = json.dumps(body).encode()
        hdrs = {"Host": f"127.0.0.1:{gw.port}", "Content-Length": str(len(payload)), **headers}
        sock.sendall(f"POST {path} HTTP/1.1\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()).encode()
                     + b"\r\n" + payload)

    for i in range(3):  # 2026-era calls in flight
        rid = f"shut-modern-{i}"
        body, route = modern_request("tools/call", {"name": "diagnostics__sleep", "arguments": {"seconds": 120}}, i)
        post_and_forget("/mcp", body, {**mcp_headers("shut-m", **route), "X-Request-Id": rid})
        started_ids["sleep"].append(rid)
    for i in range(3):  # REST calls in flight
        rid = f"shut-rest-{i}"
        post_and_forget("/v1/tools/diagnostics.sleep/call", {"arguments": {"seconds": 120}},
                        {"Content-Type": "application/json", "X-Tenant-Id": "shut-r", "X-Request-Id": rid})
        started_ids["sleep"].append(rid)
    grant(gw.url, "shut-w", "u")
    for i in range(6):  # media writes racing the signal
        rid = f"shut-write-{i}"
        post_and_forget("/v1/tools/media_v2.create_asset/call",
                        {"arguments": {"name": f"w{i}", "mime_type": "text/plain", "content_text": "x" * 50_000}},
                        {"Content-Type": "application/json", "X-Tenant-Id": "shut-w", "X-User-Id": "u",
                         "X-Request-Id": rid})
        started_ids["write"].append(rid)
    return started_ids


def reached_the_gate_chain(gw: GatewayProcess, n: int) -> bool:
    """The sleeps are running once their tool actor has them; writes leave a decision record first."""
    return len([r for r in audit(gw.url, tenant="shut-w") if r["event"] == "decision"]) >= n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_c7_signal_with_calls_in_flight_and_streams_open(tmp_path: Path, sig: int) -> None:
    env = {**BASE_ENV, "NORTHSTAR_SHUTDOWN_GRACE_S": str(GRACE_S), "NORTHSTAR_SSE_SEND_TIMEOUT_S": "2"}
    gw = GatewayProcess(tmp_path, env=env).start()
    stack: list[Any] = []
    try:
        started_ids = in_flight_everywhere(gw, stack)
        # bounded poll: the writes' decision records commit before their tools run
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not reached_the_gate_chain(gw, 1):
            time.sleep(0.05)
        assert gw.proc is not None
        began = time.monotonic()
        gw.proc.send_signal(sig)
        code = gw.proc.wait(timeout=BUDGET_S + 10)
        elapsed = time.monotonic() - began
    finally:
        for item in reversed(stack):
            closer = getattr(item, "__exit__", None)
            (closer() if closer and not isinstance(item, httpx2.Client) else item.close())
        gw.kill()
    stderr = gw.stderr_text()
    assert code == 0, stderr[-3000:]
    assert elapsed <= BUDGET_S, f"exit took {elapsed:.1f}s (budget {BUDGET_S}s)"
    assert "Traceback" not in stderr, stderr[-4000:]
    assert '"msg": "stopped"' in stderr

    # the store is intact and complete
    with sqlite3.connect(tmp_path / "northstar.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    verified = northstar_cli(tmp_path, "audit", "verify")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True, verified.stdout + verified.stderr
    with started(tmp_path) as again:
        records = {r["request_id"]: r for r in audit(again.url)}
        writes = audit(again.url, tenant="shut-w")
        decided = {r["request_id"] for r in writes if r["event"] == "decision"}
        outcomes = {r["request_id"]: r["outcome"] for r in writes if r["event"] == "outcome"}
        assert decided and set(outcomes) == decided, "a write's decision without its outcome record"
        audited = [rid for rid in started_ids["sleep"] if rid in records]
        assert audited, "no in-flight call was audited"
        for rid in audited:  # every call that started was audited, as cancelled
            assert records[rid].get("outcome") == "cancelled", records[rid]
        print(f"\n{signal.Signals(sig).name}: exit {elapsed:.2f}s, sleeps audited cancelled "
              f"{len(audited)}/{len(started_ids['sleep'])}, writes decided {len(decided)} "
              f"ok {sum(1 for o in outcomes.values() if o == 'ok')}")
        listed = httpx2.post(f"{again.url}/v1/tools/media_v2.list_assets/call", json={"arguments": {}},
                             headers={"X-Tenant-Id": "shut-w"}).json()["output"]["assets"]
        assert len(listed) >= sum(1 for o in outcomes.values() if o == "ok")  # acknowledged-ok writes are there


def test_c7_second_signal_is_not_needed_but_is_harmless(tmp_path: Path) -> None:
    with started(tmp_path, {"NORTHSTAR_SHUTDOWN_GRACE_S": str(GRACE_S)}) as gw:
        sse = LegacySse(gw, "twice").__enter__()
        try:
            assert gw.proc is not None
            began = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            threading.Timer(0.2, lambda: gw.proc.send_signal(signal.SIGTERM) if gw.proc.poll() is None
                            else None).start()  # type: ignore[union-attr]
            code = gw.proc.wait(timeout=BUDGET_S + 10)
            assert code == 0 and time.monotonic() - began <= BUDGET_S
        finally:
            sse.__exit__()
    assert "Traceback" not in gw.stderr_text()
