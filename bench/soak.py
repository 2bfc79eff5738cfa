"""A bounded soak: minutes of mixed traffic on every door of a real gateway, then the drift.

    python -m bench.soak [--seconds 180] [--workers 2] [--suites]     (make soak)

Traffic (threads, all at once): REST (echo, media writes and reads, draft saves), Streamable HTTP
in both eras (2025 sessions opened, used and ended or abandoned; stateless 2026 calls), legacy
HTTP+SSE sessions, a stdio client, and clients that hang up mid-call. After a warm-up, the
gateway's RSS, open descriptors, threads, trio tasks, sessions and SSE streams are sampled; at
the end traffic stops, the gateway settles (bounded), and a table of baseline / peak / final /
drift is printed. Exit status 1 on any 5xx, any unexpected error, a traceback, or drift beyond
the stated tolerance; 0 otherwise. ``--suites`` then runs the fuzz, race and kill -9 suites with
larger counts (NORTHSTAR_FUZZ_EXAMPLES=2000, NORTHSTAR_FUZZ_REST_EXAMPLES=100, NORTHSTAR_RACE_OPS=5000,
NORTHSTAR_KILL_ROUNDS=100).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from tests.harness import GatewayProcess, gateway_env
from tests.reliability.kit import (
    BASE_ENV,
    HANDSHAKE,
    LegacySse,
    connect,
    init_params,
    mcp_headers,
    modern_request,
    open_fds,
    reply_of,
    rpc,
    rss_kb,
)

# drift allowed between the baseline (after warm-up) and the end (after settling)
TOLERANCE = {"rss_mb": 48.0, "fds": 6, "threads": 8, "tasks": 8, "sessions": 0, "sse_streams": 0}
SOAK_ENV = {**BASE_ENV, "NORTHSTAR_SESSION_IDLE_TIMEOUT_S": "15", "NORTHSTAR_RATE_LIMIT_PER_PRINCIPAL_PER_S": "2000",
            "NORTHSTAR_RATE_LIMIT_BURST": "4000"}


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []

    def saw(self, kind: str, status: int) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.statuses[status] += 1
            if status >= 500:
                self.errors.append(f"{kind}: HTTP {status}")

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


class Soak:
    def __init__(self, gw: GatewayProcess, seconds: float, workers: int) -> None:
        self.gw, self.seconds, self.workers = gw, seconds, workers
        self.stop = threading.Event()
        self.stats = Stats()
        self.samples: list[dict[str, float]] = []

    # -- traffic ------------------------------------------------------------------------------------
    def loop(self, name: str, body: Callable[[httpx2.Client, random.Random, int], None]) -> None:
        rng = random.Random(name)
        n = 0
        with httpx2.Client(timeout=60) as http:
            while not self.stop.is_set():
                n += 1
                try:
                    body(http, rng, n)
                except (AssertionError, httpx2.HTTPError, OSError, ValueError, KeyError) as exc:
                    if not self.stop.is_set():
                        self.stats.error(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")

    def check(self, kind: str, resp: httpx2.Response, ok: tuple[int, ...] = (200,)) -> httpx2.Response:
        self.stats.saw(kind, resp.status_code)
        assert resp.status_code in ok, f"{kind}: {resp.status_code} {resp.text[:200]}"
        return resp

    def rest(self, http: httpx2.Client, rng: random.Random, n: int) -> None:
        tenant = f"soak-rest{n % 7}"
        headers = {"X-Tenant-Id": tenant, "X-User-Id": "u"}
        self.check("rest", http.post(f"{self.gw.url}/v1/tools/echo.ping/call", json={"arguments": {"message": str(n)}},
                                     headers=headers))
        if n % 3 == 0:
            args = {"name": f"n{n}", "mime_type": "text/plain", "content_text": "s" * rng.randint(10, 20000)}
            made = self.check("rest", http.post(f"{self.gw.url}/v1/tools/media_v2.create_asset/call",
                                                json={"arguments": args}, headers=headers))
            asset = made.json()["output"]["asset_id"]
            got = self.check("rest", http.post(f"{self.gw.url}/v1/tools/media_v2.get_asset/call",
                                               json={"arguments": {"asset_id": asset}}, headers=headers))
            assert got.json()["output"]["content_text"] == args["content_text"]
            if n % 2:
                self.check("rest", http.post(f"{self.gw.url}/v1/tools/media_v2.delete_asset/call",
                                             json={"arguments": {"asset_id": asset}}, headers=headers))
        if n % 5 == 0:
            spec = {"schema_version": 1, "tool_id": "notes", "title": "Notes", "description": f"rev {n}",
                    "scopes": [{"name": "notes.read", "description": "Read.", "operations": [
                        {"name": "list_notes", "description": "List.", "wraps": "media_v2.list_assets"}]}]}
            self.check("rest", http.put(f"{self.gw.url}/v1/drafts/soak{n % 4}", json={"spec": spec}, headers=headers),
                       (200, 201))
        if n % 11 == 0:
            self.check("rest", http.get(f"{self.gw.url}/v1/tools", headers=headers))
            self.check("rest", http.post(f"{self.gw.url}/v1/tools/nope.nope/call", json={}, headers=headers), (404,))

    def modern(self, http: httpx2.Client, rng: random.Random, n: int) -> None:
        name = rng.choice(["echo__ping", "echo__ping", "media_v2__list_assets", "diagnostics__sleep"])
        args: dict[str, Any] = {"seconds": 0.01} if name == "diagnostics__sleep" else {}
        body, route = modern_request("tools/call", {"name": name, "arguments": args}, n)
        resp = self.check("modern", http.post(f"{self.gw.url}/mcp", json=body,
                                              headers=mcp_headers(f"soak-m{n % 5}", **route)))
        assert "result" in reply_of(resp)
        if n % 9 == 0:
            body, route = modern_request("tools/list", None, n)
            self.check("modern", http.post(f"{self.gw.url}/mcp", json=body, headers=mcp_headers("soak-m", **route)))

    def sessions(self, http: httpx2.Client, rng: random.Random, n: int) -> None:
        tenant = f"soak-s{n % 5}"
        init = self.check("session", http.post(f"{self.gw.url}/mcp", json=rpc("initialize", init_params(), 0),
                                               headers=mcp_headers(tenant)))
        headers = mcp_headers(tenant, version=HANDSHAKE, session=init.headers["mcp-session-id"])
        self.check("session", http.post(f"{self.gw.url}/mcp", headers=headers,
                                        json={"jsonrpc": "2.0", "method": "notifications/initialized"}), (202,))
        for k in range(rng.randint(1, 6)):
            method = rng.choice(["tools/list", "ping", "tools/call"])
            params = {"name": "echo__ping", "arguments": {"message": str(k)}} if method == "tools/call" else None
            resp = self.check("session", http.post(f"{self.gw.url}/mcp", json=rpc(method, params, k + 1),
                                                   headers=headers))
            assert reply_of(resp)["id"] == k + 1
        if rng.random() < 0.8:  # the rest are abandoned: the idle timeout reaps them
            self.check("session", http.delete(f"{self.gw.url}/mcp", headers=headers))

    def legacy(self, http: httpx2.Client, rng: random.Random, n: int) -> None:
        with LegacySse(self.gw, f"soak-l{n % 3}") as sse:
            for k in range(rng.randint(1, 5)):
                resp = sse.post(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": str(k)}}, k + 1))
                self.stats.saw("sse", resp.status_code)
                assert resp.status_code == 202, resp.text
                assert sse.reply(k + 1)["result"]["structuredContent"]["message"] == str(k)

    def hangups(self, http: httpx2.Client, rng: random.Random, n: int) -> None:
        body, route = modern_request("tools/call", {"name": "diagnostics__sleep", "arguments": {"seconds": 0.2}}, n)
        payload = json.dumps(body).encode()
        head = {"Host": f"127.0.0.1:{self.gw.port}", "Content-Length": str(len(payload)),
                **mcp_headers("soak-h", **route)}
        with connect(self.gw) as sock:
            sock.sendall(b"POST /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode()
                         + b"\r\n" + payload)
            self.stop.wait(rng.random() * 0.3)  # the moment this client hangs up
        self.stats.saw("hangup", 0)

    def stdio(self) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "northstar", "stdio", "--tenant", "soak-stdio", "--user", "u"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=gateway_env(self.gw.data_dir, SOAK_ENV))
        assert proc.stdin is not None and proc.stdout is not None
        try:
            n = 0
            proc.stdin.write(json.dumps(rpc("initialize", init_params(), 0)).encode() + b"\n")
            proc.stdin.flush()
            json.loads(proc.stdout.readline())
            while not self.stop.is_set():
                n += 1
                call = rpc("tools/call", {"name": "echo__ping", "arguments": {"message": str(n)}}, n)
                proc.stdin.write(json.dumps(call).encode() + b"\n")
                proc.stdin.flush()
                while True:
                    msg = json.loads(proc.stdout.readline())
                    if msg.get("id") == n:
                        break
                self.stats.saw("stdio", 200 if "result" in msg else 500)
                self.stop.wait(0.01)
        except (OSError, ValueError) as exc:
            self.stats.error(f"stdio: {exc!r}")
        finally:
            proc.stdin.close()
            if proc.wait(timeout=30) != 0:
                self.stats.error(f"stdio exited {proc.returncode}")

    # -- measuring ----------------------------------------------------------------------------------
    def sample(self) -> dict[str, float]:
        assert self.gw.proc is not None
        pid = self.gw.proc.pid
        counts = httpx2.get(f"{self.gw.url}/v1/ops/runtime", headers=self.gw.admin_headers, timeout=30).json()
        threads = len(os.listdir(f"/proc/{pid}/task"))
        return {"rss_mb": rss_kb(pid) / 1024, "fds": open_fds(pid), "threads": threads, "tasks": counts["tasks"],
                "sessions": counts["sessions"], "sse_streams": counts["sse_streams"]}

    def run(self) -> int:
        loops: list[tuple[str, Callable[..., None]]] = [("rest", self.rest), ("modern", self.modern),
                                                         ("session", self.sessions), ("sse", self.legacy),
                                                         ("hangup", self.hangups)]
        threads = [threading.Thread(target=self.loop, args=(f"{name}{w}", fn), daemon=True)
                   for w in range(self.workers) for name, fn in loops]
        threads.append(threading.Thread(target=self.stdio, daemon=True))
        for t in threads:
            t.start()
        warmup = min(20.0, self.seconds / 6)
        self.stop.wait(warmup)  # the soak's clock: traffic runs meanwhile
        began = time.monotonic()
        baseline = self.sample()
        self.samples.append(baseline)
        while not self.stop.wait(min(10.0, self.seconds / 10)):
            self.samples.append(self.sample())
            if time.monotonic() - began >= self.seconds:
                break
        self.stop.set()
        for t in threads:
            t.join(timeout=60)
        final = self.settle(baseline)
        return self.report(baseline, final, time.monotonic() - began)

    def settle(self, baseline: dict[str, float]) -> dict[str, float]:
        """Bounded wait for abandoned sessions (idle timeout) and connections to wind down."""
        deadline = time.monotonic() + 40
        while True:
            final = self.sample()
            within = all(final[k] - baseline[k] <= TOLERANCE[k] for k in TOLERANCE)
            if within or time.monotonic() >= deadline:
                return final
            time.sleep(1)  # polling a real server's asynchronous teardown, bounded above

    def report(self, baseline: dict[str, float], final: dict[str, float], elapsed: float) -> int:
        peak = {k: max(s[k] for s in self.samples) for k in baseline}
        rows = [("metric", "baseline", "peak", "final", "drift", "tolerance", "ok")]
        failed = False
        for key in ("rss_mb", "fds", "threads", "tasks", "sessions", "sse_streams"):
            drift = final[key] - baseline[key]
            ok = drift <= TOLERANCE[key]
            failed |= not ok
            rows.append((key, f"{baseline[key]:.1f}", f"{peak[key]:.1f}", f"{final[key]:.1f}", f"{drift:+.1f}",
                         f"{TOLERANCE[key]:+}", "yes" if ok else "NO"))
        fives = sum(c for s, c in self.stats.statuses.items() if s >= 500)
        rows.append(("5xx", "", "", str(fives), "", "+0", "yes" if fives == 0 else "NO"))
        traceback = "Traceback" in self.gw.stderr_text()
        rows.append(("tracebacks", "", "", "1" if traceback else "0", "", "+0", "no" if traceback else "yes"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        print(f"\nsoak: {elapsed:.0f}s measured, {sum(self.stats.requests.values())} requests "
              f"{dict(sorted(self.stats.requests.items()))}")
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        for err in self.stats.errors[:20]:
            print("error:", err)
        return 1 if failed or fives or traceback or self.stats.errors else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("NORTHSTAR_SOAK_SECONDS", "180")))
    ap.add_argument("--workers", type=int, default=2, help="threads per kind of traffic")
    ap.add_argument("--suites", action="store_true", help="then run the fuzz, race and kill -9 suites, larger")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="northstar-soak-") as data:
        gw = GatewayProcess(Path(data), env=SOAK_ENV).start()
        try:
            for k in range(7):
                httpx2.post(f"{gw.url}/v1/firearms/grants", headers=gw.admin_headers, timeout=30,
                            json={"tenant": f"soak-rest{k}", "user": "u", "firearm": "firearm.media.write",
                                  "reason": "soak"})
            status = Soak(gw, args.seconds, args.workers).run()
        finally:
            code = gw.stop()
        if code != 0:
            print(f"the gateway exited {code} on SIGTERM")
            status = 1
    if args.suites:
        env = {**os.environ, "NORTHSTAR_FUZZ_EXAMPLES": "2000", "NORTHSTAR_FUZZ_REST_EXAMPLES": "100",
               "NORTHSTAR_RACE_OPS": "5000", "NORTHSTAR_KILL_ROUNDS": "100"}
        suites = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/reliability/test_fuzz.py",
                                 "tests/reliability/test_fuzz_openapi.py",
                                 "tests/reliability/test_races.py", "tests/reliability/test_durability.py",
                                 "-k", "fuzz or races or kill"], env=env, check=False)
        status = status or suites.returncode
    return status


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    sys.exit(main())
