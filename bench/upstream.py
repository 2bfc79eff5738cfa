"""Federation benchmark: one upstream MCP server, called directly, through northstar, through ContextForge.

    python -m bench.upstream                     # 3 interleaved rounds, 5 s cells
    python -m bench.upstream --rounds 1 --duration 2 --no-contextforge
    python -m bench --only upstreams             # the same, as a section of the suite

The upstream is the SDK's ``MCPServer`` (``bench/upstream_server.py``: Streamable HTTP,
``json_response=True``, one read-only tool ``echo``), pinned with wrk to the load core. In
front of it, each pinned to the server core:

* ``direct``        no gateway: wrk calls the upstream's ``echo`` over a session it opened
                    (``initialize`` + ``notifications/initialized``), as a gateway's client does;
* ``relay``         the floor: the same calls through a byte relay on trio
                    (``bench/relay_server.py``): what any trio process on the path adds;
* ``northstar``     the gateway in its default deployment (``api_key`` auth), the upstream
                    registered over REST, its draft generated and published; wrk calls the
                    governed ``up__echo`` (gate chain, limits, a durable audit record per call)
                    with a key minted by ``northstar keys create``;
* ``contextforge``  ContextForge (PyPI ``mcp-contextforge-gateway``, its own venv under
                    ``bench/.venvs/contextforge``: ``make bench-contextforge``), one worker, auth
                    on (a JWT minted by its own ``create_jwt_token``), the upstream registered
                    with ``POST /gateways`` and put in a virtual server; wrk calls ``up-echo``
                    on ``/servers/<id>/mcp``. When it cannot run, the section says why.
* ``direct-paced``  ``direct`` at c=1 with a pause before each call as long as the round's
                    ``northstar`` call took over the direct one (whole ms, wrk's granularity):
                    the upstream called at the pace it sees behind a gateway, idle between calls.
                    How much slower the upstream itself answers then is no gateway's work.

Each round measures every path in turn (warm-up, then c=1 and c=32), so all paths share the
machine's minutes. Figures are medians over rounds; the comparisons are per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx2

from bench import procs, protocol, wrk
from bench.flows import FlowOptions, cell_script
from bench.protocol import CallRequest, CheckFailed, Prepared

KINDS = protocol.UPSTREAM_KINDS
DIRECT_KINDS = ("direct", "direct-paced")  # wrk calls the upstream itself
PHASES_KEPT = 4096  # northstar.common.phases.DEFAULT_KEEP: the recent calls the gateway keeps
CONCURRENCY = (1, 32)
UPSTREAM = "up"
TOOL = "echo"
NORTHSTAR_TOOL = f"{UPSTREAM}__{TOOL}"
CF_VENV = Path(__file__).resolve().parent / ".venvs" / "contextforge"
CF_ADMIN = "admin@example.com"
READY_TIMEOUT_S = 60.0
#: ContextForge's cells: at ~10 calls/s, c=32 queues each call seconds long; shorter cells
#: would complete nothing and wrk's usual 5 s timeout would count its answers as errors.
#: After each of its runs the calls wrk abandoned are left to finish (:func:`settle`), or the
#: next run would queue behind them.
SLOW_CELL_S = 15.0
SLOW_WARMUP_S = 4.0
SLOW_TIMEOUT = "60s"
SETTLE_LIMIT_S = 120.0
#: What ContextForge needs to start with auth on and call a loopback upstream without 429s.
#: Its two secrets are drawn per run (it refuses low-entropy ones).
CF_ENV = {
    "SSRF_ALLOW_LOCALHOST": "true",
    "RATE_LIMITING_ENABLED": "false",
    "AUTH_REQUIRED": "true",
    "MCPGATEWAY_UI_ENABLED": "false",
    "MCPGATEWAY_ADMIN_API_ENABLED": "true",
    "PLATFORM_ADMIN_EMAIL": CF_ADMIN,
    "PLATFORM_ADMIN_PASSWORD": "Bench-Admin-Pass-1234",
    "LOG_LEVEL": "ERROR",
}


@dataclass
class Target:
    """One way to call the upstream's tool: the wrk URL and script, or why it is unavailable."""

    kind: str
    url: str = ""
    script: Path | None = None
    unavailable: str | None = None
    server: procs.Server | None = None
    processes: dict[str, procs.Server] = field(default_factory=dict)  # whose CPU time a call costs
    concurrency: tuple[int, ...] = CONCURRENCY
    prepared: Prepared | None = None  # the request wrk sends (direct-paced writes its script per round)
    pause_ms: int = 0  # direct-paced: this round's pause before each call


# -- servers --------------------------------------------------------------------------------
def upstream_server(work: Path, core: int | None = procs.LOAD_CORE) -> procs.Server:
    port = procs.free_port()
    cmd = [procs.PY, "-m", "bench.upstream_server", "--port", str(port)]
    return procs.Server("upstream", cmd, port=port, workdir=work, core=core)


def relay_server(work: Path, upstream: procs.Server, core: int | None = procs.SERVER_CORE) -> procs.Server:
    """The byte relay in front of ``upstream``, on the server core (where a gateway runs)."""
    port = procs.free_port()
    cmd = [procs.PY, "-m", "bench.relay_server", "--port", str(port), "--upstream-port", str(upstream.port)]
    return procs.Server("relay", cmd, port=port, workdir=work, core=core)


def contextforge_version() -> str | None:
    found = sorted(CF_VENV.glob("lib/python*/site-packages/mcp_contextforge_gateway-*.dist-info"))
    return found[-1].name.removeprefix("mcp_contextforge_gateway-").removesuffix(".dist-info") if found else None


def contextforge_server(work: Path) -> procs.Server | str:
    """ContextForge on the server core, or why it cannot run here."""
    exe = CF_VENV / "bin" / "mcpgateway"
    if not exe.exists():
        return f"not installed at {CF_VENV} (make bench-contextforge)"
    port = procs.free_port()
    home = work / "contextforge"
    home.mkdir(exist_ok=True)
    env = {**CF_ENV, "DATABASE_URL": f"sqlite:///{home / 'mcp.db'}",
           "JWT_SECRET_KEY": secrets.token_urlsafe(32), "AUTH_ENCRYPTION_SECRET": secrets.token_urlsafe(32)}
    server = procs.Server("contextforge", [str(exe), "--host", "127.0.0.1", "--port", str(port)], port=port,
                          workdir=work, env=env)
    server._env.pop("VIRTUAL_ENV", None)
    return server


def wait_until(check: Any, what: str, timeout: float = READY_TIMEOUT_S) -> Any:
    """Poll ``check`` (a quick request to a server in another process) until it answers truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx2.HTTPError, CheckFailed) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise CheckFailed(f"{what} did not happen in {timeout:.0f}s (last: {str(last)[:500]})")


def tool_request(path: str, tool: str, headers: dict[str, str], flow: str) -> CallRequest:
    """A ``tools/call`` of ``tool`` with the suite's arguments, in ``flow``'s framing."""
    base = protocol.modern_request(path) if flow == "modern-2026" else protocol.stateless_request(path)
    params = {**base.params, "name": tool}
    extra = {"Mcp-Name": tool} if flow == "modern-2026" else {}
    return CallRequest(path, {**base.headers, **extra, **headers}, params)


# -- the three paths --------------------------------------------------------------------------
def direct_target(client: httpx2.Client, upstream: procs.Server) -> Prepared:
    session_id = protocol.open_session(client, upstream.url)
    headers = {"Mcp-Session-Id": session_id}
    return Prepared(tool_request("/mcp", TOOL, headers, "session-2025"), session_id)


def northstar_target(client: httpx2.Client, gw: procs.Gateway, upstream: procs.Server, flow: str) -> Prepared:
    """Register the upstream, import and publish its draft (the bootstrap admin key), then the
    governed call with a caller's key minted by the CLI."""
    admin = gw.admin_headers()
    spec = {"name": UPSTREAM, "transport": "streamable_http", "url": f"{upstream.url}/mcp",
            "max_concurrency": 64, "call_timeout_s": 30}
    resp = client.post(f"{gw.url}/v1/upstreams", json=spec, headers=admin)
    if resp.status_code != 201:
        raise CheckFailed(f"registering the upstream failed\n{protocol.describe(resp)}")
    wait_until(lambda: client.get(f"{gw.url}/v1/upstreams/{UPSTREAM}", headers=admin).json().get("state") == "ready",
               "the upstream connecting")
    draft = client.post(f"{gw.url}/v1/upstreams/{UPSTREAM}/draft", headers=admin)
    if draft.status_code not in (200, 201):
        raise CheckFailed(f"importing the upstream failed\n{protocol.describe(draft)}")
    pub = client.post(f"{gw.url}/v1/drafts/{UPSTREAM}/publish", json={"version": draft.json()["version"]},
                      headers=admin)
    if pub.status_code not in (200, 201):
        raise CheckFailed(f"publishing the upstream's draft failed\n{protocol.describe(pub)}")
    path = "/mcp/stateless" if flow == "stateless" else "/mcp"
    request = tool_request(path, NORTHSTAR_TOOL, gw.caller_headers(), flow)
    wait_until(lambda: protocol.precheck(client, gw.url, request), "the published tool answering")
    return Prepared(request)


def local_target(client: httpx2.Client, gw: procs.Gateway, flow: str) -> Prepared:
    """The same gateway's built-in ``echo__ping``, same flow and key: the governed call without
    the upstream hop (what the hop costs is the difference)."""
    prepared = protocol.prepare(client, flow, "gateway", gw.url, gw.caller_headers())
    protocol.precheck(client, gw.url, prepared.request)
    return prepared


def contextforge_token(server: procs.Server) -> str:
    """An admin JWT minted by ContextForge's own tool, as its docs deploy it."""
    cmd = [str(CF_VENV / "bin" / "python"), "-m", "mcpgateway.utils.create_jwt_token", "--username", CF_ADMIN,
           "--exp", "600", "--secret", server._env["JWT_SECRET_KEY"]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=server._env)
    if done.returncode != 0 or not done.stdout.strip():
        raise CheckFailed(f"create_jwt_token failed: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def contextforge_target(client: httpx2.Client, cf: procs.Server, upstream: procs.Server) -> Prepared:
    """Register the upstream (``POST /gateways``), a virtual server with its tool; the call."""
    wait_until(lambda: client.get(f"{cf.url}/health").status_code == 200, "ContextForge /health")
    auth = {"Authorization": f"Bearer {contextforge_token(cf)}"}
    body = {"name": UPSTREAM, "url": f"{upstream.url}/mcp", "transport": "STREAMABLEHTTP"}
    resp = client.post(f"{cf.url}/gateways", json=body, headers=auth)
    if resp.status_code not in (200, 201):
        raise CheckFailed(f"registering the upstream with ContextForge failed\n{protocol.describe(resp)}")
    tools = wait_until(lambda: [t for t in client.get(f"{cf.url}/tools", headers=auth).json()
                                if t.get("originalName") == TOOL], "ContextForge listing the tool")
    server = {"server": {"name": "bench", "associated_tools": [tools[0]["id"]]}}
    resp = client.post(f"{cf.url}/servers", json=server, headers=auth)
    if resp.status_code not in (200, 201):
        raise CheckFailed(f"creating the virtual server failed\n{protocol.describe(resp)}")
    request = tool_request(f"/servers/{resp.json()['id']}/mcp", tools[0]["name"], auth, "stateless")
    unauthenticated = client.post(f"{cf.url}{request.path}", content=request.body(1),
                                  headers={k: v for k, v in request.headers.items() if k != "Authorization"})
    if unauthenticated.status_code != 401:
        raise CheckFailed(f"ContextForge answered a call without credentials\n{protocol.describe(unauthenticated)}")
    protocol.precheck(client, cf.url, request)
    return Prepared(request)


# -- measuring ------------------------------------------------------------------------------
def measure(target: Target, opts: FlowOptions) -> dict[str, Any]:
    cell: dict[str, Any] = {"server": target.kind, "valid": True, "error": None}
    if target.pause_ms:
        cell["pause_ms"] = target.pause_ms
    slow = target.kind == "contextforge"  # 32 calls queued behind ~100 ms each: longer cells, later timeout
    duration, warmup = (max(opts.duration_s, SLOW_CELL_S), max(opts.warmup_s, SLOW_WARMUP_S)) if slow \
        else (opts.duration_s, opts.warmup_s)
    timeout = SLOW_TIMEOUT if slow else wrk.TIMEOUT
    cell["duration_s"] = duration
    for conns in target.concurrency:
        assert target.script is not None
        warm = wrk.run(target.url, target.script, connections=conns, duration_s=warmup, timeout=timeout)
        if slow and target.server is not None:
            settle(target.server)
        cpu = {k: s.cpu_s() for k, s in target.processes.items()}
        calls = phase_calls(target)
        timed = wrk.run(target.url, target.script, connections=conns, duration_s=duration, timeout=timeout)
        cell[f"c{conns}"] = timed.to_dict()
        # CPU per call of each process on the path: robust to a busy machine, unlike wall time.
        cell[f"c{conns}"]["cpu_us_per_call"] = {
            k: round((s.cpu_s() - cpu[k]) / timed.requests * 1e6) if timed.requests else None
            for k, s in target.processes.items()}
        if calls is not None:  # where the gateway's time went in this run's calls
            cell[f"c{conns}"]["phases_p50_us"] = phase_p50s(target, calls)
        # A slow server's warm-up may complete nothing (it only has to fill the queue).
        problems = [f"warm-up: {p}" for p in warm.problems
                    if not (slow and p in ("no request completed", "no latency percentiles in wrk's output"))]
        problems += timed.problems
        if problems:
            cell["valid"] = False
            cell["error"] = "; ".join(f"c{conns}: {p}" for p in problems)
    if slow and target.server is not None:
        settle(target.server)
    if target.server is not None and not target.server.alive():
        cell["valid"], cell["error"] = False, f"{target.kind} died:\n{target.server.log_tail()}"
    return cell


#: The gateway paths whose calls ``GET /v1/ops/phases`` breaks down, and the kind they are there.
PHASE_KINDS = {"northstar": "upstream", "northstar-local": "local"}


def _phases(target: Target, recent: int | None = None) -> dict[str, Any] | None:
    if target.kind not in PHASE_KINDS or not isinstance(target.server, procs.Gateway):
        return None
    gw = target.server
    params = {"recent": str(recent)} if recent else {}
    try:
        resp = httpx2.get(f"{gw.url}/v1/ops/phases", params=params, headers=gw.admin_headers(), timeout=10)
    except httpx2.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    found: dict[str, Any] | None = resp.json()["doors"].get("http", {}).get(PHASE_KINDS[target.kind])
    return found if found is not None else {"calls": 0, "phases": {}}


def phase_calls(target: Target) -> int | None:
    """How many calls the gateway has broken down so far (None: not a gateway path)."""
    found = _phases(target)
    return None if found is None else int(found["calls"])


def phase_p50s(target: Target, before: int) -> dict[str, float] | None:
    """Each phase's p50 in µs over the calls since ``before`` (the most recent the gateway keeps)."""
    now = phase_calls(target)
    if now is None or now <= before:
        return None
    found = _phases(target, min(now - before, PHASES_KEPT))
    return None if found is None else {label: v["p50_us"] for label, v in found["phases"].items()}


def gateway_of(server: procs.Server) -> procs.Gateway:
    assert isinstance(server, procs.Gateway)
    return server


def settle(server: procs.Server, limit_s: float = SETTLE_LIMIT_S) -> None:
    """Until the server is idle (under 5% of a core for half a second), within ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and server.alive():
        used = server.cpu_s()
        time.sleep(0.5)
        if server.cpu_s() - used < 0.025:
            return


def prepare_all(client: httpx2.Client, servers: dict[str, procs.Server | str], work: Path,
                flow: str) -> dict[str, Target]:
    upstream = servers["upstream"]
    assert isinstance(upstream, procs.Server)
    targets: dict[str, Target] = {}
    for kind in KINDS:
        server = servers.get(kind)
        if server is None:
            continue
        if isinstance(server, str):
            targets[kind] = Target(kind, unavailable=server)
            continue
        try:
            prepared = {"direct": lambda: direct_target(client, upstream),
                        "relay": lambda: direct_target(client, upstream),
                        "direct-paced": lambda: direct_target(client, upstream),
                        "northstar-local": lambda: local_target(client, gateway_of(server), flow),  # noqa: B023
                        "northstar": lambda: northstar_target(client, gateway_of(server), upstream, flow),  # noqa: B023
                        "contextforge": lambda: contextforge_target(client, server, upstream)}[kind]()  # noqa: B023
            protocol.precheck(client, upstream.url if kind in DIRECT_KINDS else server.url, prepared.request)
        except (CheckFailed, httpx2.HTTPError, OSError, ValueError, KeyError) as exc:
            if kind != "contextforge":
                raise
            targets[kind] = Target(kind, unavailable=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            continue
        base = upstream.url if kind in DIRECT_KINDS else server.url
        script = cell_script(prepared).write(work / f"upstream-{kind}.lua")
        # The relay's CPU is reported as the gateway's: it is the process in between.
        processes = {"upstream": upstream} if kind in DIRECT_KINDS else {"gateway": server, "upstream": upstream}
        targets[kind] = Target(kind, f"{base}{prepared.request.path}", script, server=server, processes=processes,
                               concurrency=(1,) if kind == "direct-paced" else CONCURRENCY, prepared=prepared)
    return targets


def run(work: Path, opts: FlowOptions, *, flow: str = "stateless", contextforge: bool = True,
        log: Any = print) -> dict[str, Any]:
    """Every round of every available path; returns cells, medians and the comparisons."""
    upstream = upstream_server(work)
    servers: dict[str, procs.Server | str] = {"upstream": upstream, "direct": upstream, "direct-paced": upstream,
                                              "relay": relay_server(work, upstream)}
    servers["northstar"] = procs.gateway(work, name="northstar")
    servers["northstar-local"] = servers["northstar"]
    if contextforge:
        servers["contextforge"] = contextforge_server(work)
    started = [s for k, s in servers.items() if isinstance(s, procs.Server) and k in ("upstream", "relay", "northstar",
                                                                                    "contextforge")]
    cells: list[dict[str, Any]] = []
    with procs.running(*started), httpx2.Client(timeout=60) as client:
        targets = prepare_all(client, servers, work, flow)
        for rnd in range(1, opts.rounds + 1):
            for target in targets.values():
                if target.unavailable is not None:
                    continue
                if target.kind == "direct-paced" and not pace(target, cells, rnd, work):
                    continue
                cell = {**measure(target, opts), "round": rnd}
                cells.append(cell)
                log(cell_line(cell))
    unavailable = {k: t.unavailable for k, t in targets.items() if t.unavailable}
    for kind, why in unavailable.items():
        log(f"  {kind}: unavailable: {why}")
    version = contextforge_version() if contextforge else None
    return {"options": {"rounds": opts.rounds, "duration_s": opts.duration_s, "warmup_s": opts.warmup_s,
                        "northstar_flow": flow, "contextforge_version": version},
            "cells": cells, "unavailable": unavailable, "summary": summarize(cells)}


def pace(target: Target, cells: list[dict[str, Any]], rnd: int, work: Path) -> bool:
    """Write ``direct-paced``'s script for round ``rnd``: a pause of the round's northstar c=1 p50
    minus direct's, in whole ms (at least 1). False when the round has no valid pair to pace by."""
    by = {c["server"]: c for c in cells if c["round"] == rnd and c["valid"]}
    if "northstar" not in by or "direct" not in by or target.prepared is None:
        return False
    gap = by["northstar"]["c1"]["p50_ms"] - by["direct"]["c1"]["p50_ms"]
    script = replace(cell_script(target.prepared), delay_ms=max(1, round(gap)))
    target.script = script.write(work / f"upstream-direct-paced-{rnd}.lua")
    target.pause_ms = script.delay_ms
    return True


def cell_line(cell: dict[str, Any]) -> str:
    head = f"  round {cell['round']} {cell['server']:<13}"
    c1, c32 = cell.get("c1") or {}, cell.get("c32") or {}
    cpu = c32.get("cpu_us_per_call") or {}
    line = (f"{head} c32 {c32.get('rps', 0):>8.0f} req/s | c1 {c1.get('rps', 0):>6.0f} req/s "
            f"p50 {c1.get('p50_ms') or 0:6.2f}ms p99 {c1.get('p99_ms') or 0:6.2f}ms | CPU us/call at c32 "
            + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    return line if cell["valid"] else f"{line}  INVALID: {cell['error']}"


# -- summary --------------------------------------------------------------------------------
METRICS = ("c1_rps", "c1_p50_ms", "c1_p99_ms", "c32_rps", "c32_p50_ms", "c32_p99_ms")
#: (label, metric, this server, other server, how): ``ratio`` is this / other, ``minus`` this - other.
COMPARISONS = (
    ("northstar_p50_c1_minus_direct_ms", "c1_p50_ms", "northstar", "direct", "minus"),
    ("relay_p50_c1_minus_direct_ms", "c1_p50_ms", "relay", "direct", "minus"),
    ("northstar_p50_c1_minus_relay_ms", "c1_p50_ms", "northstar", "relay", "minus"),
    ("paced_p50_c1_minus_direct_ms", "c1_p50_ms", "direct-paced", "direct", "minus"),
    ("northstar_p50_c1_minus_paced_ms", "c1_p50_ms", "northstar", "direct-paced", "minus"),
    ("relay_throughput_c32_vs_direct", "c32_rps", "relay", "direct", "ratio"),
    ("northstar_throughput_c32_vs_direct", "c32_rps", "northstar", "direct", "ratio"),
    ("northstar_throughput_c32_vs_contextforge", "c32_rps", "northstar", "contextforge", "ratio"),
    ("northstar_throughput_c1_vs_contextforge", "c1_rps", "northstar", "contextforge", "ratio"),
    ("contextforge_p50_c1_minus_direct_ms", "c1_p50_ms", "contextforge", "direct", "minus"),
)


def metric(cell: dict[str, Any] | None, name: str) -> float | None:
    if not cell or not cell["valid"]:
        return None
    conc, key = name.split("_", 1)
    if conc not in cell:  # a cell measured at the other concurrency only (direct-paced: c=1)
        return None
    value = cell[conc][key]
    return None if value is None else float(value)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    rounds = sorted({c["round"] for c in cells})
    by = {(c["server"], c["round"]): c for c in cells}
    medians: dict[str, dict[str, Any]] = {
        kind: {name: median([v for r in rounds if (v := metric(by.get((kind, r)), name)) is not None])
               for name in METRICS} for kind in KINDS}
    for kind in KINDS:
        for conc in ("c1", "c32"):
            for proc in ("gateway", "upstream"):
                values = [float(v) for r in rounds if (c := by.get((kind, r))) and c["valid"]
                          and (v := ((c.get(conc) or {}).get("cpu_us_per_call") or {}).get(proc)) is not None]
                medians[kind][f"{conc}_{proc}_cpu_us"] = median(values)
            per_round = [c[conc]["phases_p50_us"] for r in rounds if (c := by.get((kind, r))) and c["valid"]
                         and (c.get(conc) or {}).get("phases_p50_us")]
            labels = sorted({label for p in per_round for label in p})
            medians[kind][f"{conc}_phases_p50_us"] = {
                label: median([p[label] for p in per_round if label in p]) for label in labels} or None
    ratios: dict[str, Any] = {}
    for label, name, this, other, how in COMPARISONS:
        per_round = []
        for r in rounds:
            a, b = metric(by.get((this, r)), name), metric(by.get((other, r)), name)
            per_round.append(None if a is None or b is None or (how == "ratio" and not b)
                             else (a - b if how == "minus" else a / b))
        ratios[label] = {"per_round": per_round, "median": median([x for x in per_round if x is not None])}
    return {"medians": medians, "ratios": ratios}


def profile_northstar(work: Path, flow: str, seconds: float, connections: int, idle: bool = False) -> str:
    """py-spy on the gateway while wrk drives the governed upstream call; the summary tables."""
    from bench import profile

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    upstream, gw = upstream_server(work), procs.gateway(work, name="northstar")
    with procs.running(upstream, gw), httpx2.Client(timeout=60) as client:
        prepared = northstar_target(client, gw, upstream, flow)
        script = cell_script(prepared).write(work / "profile.lua")
        url = f"{gw.url}{prepared.request.path}"
        wrk.run(url, script, connections=connections, duration_s=2)
        profile.OUT.mkdir(parents=True, exist_ok=True)
        collapsed = profile.OUT / f"northstar-upstream-{flow}-c{connections}.txt"
        cmd = [spy, "record", "--pid", str(gw.pid), "--format", "raw", "--output", str(collapsed),
               "--duration", str(int(seconds) + 1), "--rate", "250", "--nonblocking", *(["--idle"] if idle else [])]
        spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        result = wrk.run(url, script, connections=connections, duration_s=seconds)
        spy_proc.wait(timeout=seconds + 30)
    head = (f"northstar upstream {flow} c={connections}: {result.rps:.0f} req/s p50 {result.p50_ms} ms "
            f"({'valid' if result.valid else 'INVALID: ' + '; '.join(result.problems)})")
    return head + "\n" + profile.summarize(collapsed, 45) + f"\n\ncollapsed stacks: {collapsed}"


LAYERS = ("http", "lane", "session", "sdk")


def decompose(port: int, calls: int, concurrency: int) -> dict[str, float]:
    """In this process, against the upstream on ``port``: CPU per call of each layer of the
    gateway's upstream call, innermost first (diagnostic; it reaches into the session):

    * ``http``     the lean lane's HTTP/1.1 exchange alone (``LeanPool.post``);
    * ``lane``     + the JSON-RPC reply read and checked as a ``CallToolResult`` (``_send``);
    * ``session``  + readiness, pin check, concurrency slot, deadline, result checks (size,
                   output schema, secrets): ``UpstreamSession.call``, what the gateway awaits;
    * ``sdk``      the same call through the SDK's session instead of the lean lane.
    """
    import trio

    from northstar.upstreams import lean as lean_mod
    from northstar.upstreams.messages import Call
    from northstar.upstreams.session import UpstreamSession
    from northstar.upstreams.spec import parse_spec

    async def run() -> dict[str, float]:
        spec = parse_spec({"name": UPSTREAM, "transport": "streamable_http", "url": f"http://127.0.0.1:{port}/mcp",
                           "max_concurrency": 64})
        session = UpstreamSession(spec)
        out: dict[str, float] = {}
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            await session.wait_until(lambda st: st.state == "ready")
            msg = Call(TOOL, {"message": "hi"}, pin=session.state.tools[TOOL].pin)
            client, pool = session._lean or (None, None)
            assert pool is not None, "the upstream did not take the lean lane"
            ids = iter(range(10**9))  # one session: every request needs its own id

            def http_call() -> Any:
                return pool.post(lean_mod.call_body(f"bench-{next(ids)}", TOOL, {"message": "hi"}))

            async def sdk_call() -> None:
                session._lean = None
                try:
                    await session.call(msg)
                finally:
                    session._lean = (client, pool)

            layers = {"http": http_call, "lane": lambda: session._send(client, msg),
                      "session": lambda: session.call(msg), "sdk": sdk_call}
            for name, layer in layers.items():
                with trio.fail_after(600):
                    out[name] = await cpu_per_call(layer, calls, concurrency)
            nursery.cancel_scope.cancel()
        return out

    return trio.run(run)


async def cpu_per_call(layer: Any, calls: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call of ``layer``, after a warm-up."""
    import trio

    async def worker(n: int) -> None:
        for _ in range(n):
            await layer()

    for rep in (calls // 5, calls):
        started = time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker, max(1, rep // concurrency))
    return (time.process_time() - started) / (max(1, calls // concurrency) * concurrency) * 1e6


def decompose_report(calls: int) -> str:
    """Each layer's CPU per call at c=1 and c=32, the upstream pinned to the load core, this process
    to the server core (as the gateway)."""
    with procs.workdir() as work:
        server = upstream_server(work)
        with procs.running(server):
            os.sched_setaffinity(0, {procs.SERVER_CORE})
            rows = {conc: decompose(server.port, calls, conc) for conc in (1, 32)}
    lines = ["| layer (cumulative) | CPU us/call, c=1 | CPU us/call, c=32 |", "|---|---|---|"]
    lines += [f"| {name} | {rows[1][name]:.0f} | {rows[32][name]:.0f} |" for name in LAYERS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--flow", choices=("stateless", "modern-2026"), default="stateless",
                    help="how wrk calls northstar (the governed tool on /mcp/stateless, or 2026-07-28 on /mcp)")
    ap.add_argument("--no-contextforge", action="store_true")
    ap.add_argument("--profile", type=float, metavar="SECONDS",
                    help="instead: py-spy on northstar under wrk for SECONDS (see --connections)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--idle", action="store_true", help="with --profile: sample idle frames too")
    ap.add_argument("--decompose", type=int, metavar="CALLS",
                    help="instead: CPU per call of each layer of northstar's upstream call, in process")
    args = ap.parse_args(argv)
    procs.pin_self()
    if args.decompose:
        print(decompose_report(args.decompose))
        return 0
    if args.profile:
        with procs.workdir() as work:
            print(profile_northstar(work, args.flow, args.profile, args.connections, args.idle))
        return 0
    opts = FlowOptions(rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup)
    with procs.workdir() as work:
        try:
            result = run(work, opts, flow=args.flow, contextforge=not args.no_contextforge)
        except Exception:
            traceback.print_exc()
            return 1
    from bench import report

    print(report.upstreams_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
