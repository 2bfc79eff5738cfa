"""The flow matrix: gateway, two baselines and the ceiling, alternated, several rounds, c=1 and c=32.

Servers (each pinned to the server core):

* ``gateway``        northstar (governed, audited: one durable commit per call);
* ``baseline-json``  the SDK's ``MCPServer`` on uvicorn with ``json_response=True``: its fastest
                     configuration, the one a team tuning for speed deploys (the headline baseline);
* ``baseline-sse``   the same with the SDK's default configuration (answers framed as SSE);
* ``ceiling``        a fixed-reply ASGI app on Hypercorn's trio worker: what northstar's own HTTP
                     stack can do with no MCP work at all.

Per round, per flow: gateway, then each baseline, then the ceiling. Each (server, flow) cell is
prepared (a fresh session where the flow has one), checked with one real call, then timed by
wrk: a warm-up run and a measured run at concurrency 1 (latency), the same at 32 (throughput).
All four servers stay up for the whole matrix (idle while another is measured).
"""

from __future__ import annotations

import statistics
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from bench import procs, protocol, wrk
from bench.protocol import CheckFailed, Prepared

KINDS = ("gateway", "baseline-json", "baseline-sse", "ceiling")
BASELINES = ("baseline-json", "baseline-sse")
CONCURRENCY = (1, 32)


@dataclass(frozen=True)
class FlowOptions:
    rounds: int
    duration_s: float
    warmup_s: float


def cell_script(prepared: Prepared) -> wrk.Script:
    req = prepared.request
    return wrk.Script("POST", req.headers, req.path, req.body_prefix, req.body_suffix)


def measure(server: procs.Server, script: Path, path: str, opts: FlowOptions) -> dict[str, Any]:
    """Warm-up then measured wrk runs at each concurrency; returns the cell's results."""
    out: dict[str, Any] = {"acked": 0}
    for conns in CONCURRENCY:
        url = f"{server.url}{path}"
        warm = wrk.run(url, script, connections=conns, duration_s=opts.warmup_s)
        timed = wrk.run(url, script, connections=conns, duration_s=opts.duration_s)
        out["acked"] += warm.good + timed.good
        out[f"c{conns}"] = timed.to_dict()
        if not warm.valid:
            out[f"c{conns}"]["problems"] = [f"warm-up: {p}" for p in warm.problems] + timed.problems
            out[f"c{conns}"]["valid"] = False
    return out


def run_cell(client: httpx2.Client, server: procs.Server, flow: str, kind: str, workdir: Path,
             opts: FlowOptions) -> dict[str, Any]:
    """One (server, flow) cell; an incorrect answer or a dead server makes it invalid, not fatal."""
    cell: dict[str, Any] = {"server": kind, "flow": flow, "valid": False, "error": None, "acked": 0}
    try:
        prepared = protocol.prepare(client, flow, kind, server.url, procs.auth_for(server))
        protocol.precheck(client, server.url, prepared.request)
        cell["acked"] = 1
    except (CheckFailed, httpx2.HTTPError) as exc:
        cell["error"] = f"{type(exc).__name__}: {exc}"
        return cell
    script = cell_script(prepared).write(workdir / f"{kind}-{flow}.lua")
    timed = measure(server, script, prepared.request.path, opts)
    cell["acked"] += timed.pop("acked")
    cell.update(timed)
    problems = [f"c{c}: {p}" for c in CONCURRENCY for p in cell[f"c{c}"]["problems"]]
    if not server.alive():
        problems.append(f"{kind} died:\n{server.log_tail()}")
    cell["valid"] = not problems
    cell["error"] = "; ".join(problems) or None
    return cell


def server_for(servers: dict[str, procs.Server], flow: str, kind: str) -> procs.Server:
    if kind in BASELINES and flow == "stateless":
        return servers[f"{kind}-stateless"]
    return servers[kind]


def run_matrix(opts: FlowOptions, workdir: Path, log: Any = print) -> dict[str, Any]:
    """Every round of every flow; returns ``{"cells": [...], "summary": ..., "durability": ...}``."""
    servers = {
        "gateway": procs.gateway(workdir),
        "baseline-json": procs.baseline(workdir, json_response=True),
        "baseline-json-stateless": procs.baseline(workdir, stateless=True, json_response=True),
        "baseline-sse": procs.baseline(workdir, json_response=False),
        "baseline-sse-stateless": procs.baseline(workdir, stateless=True, json_response=False),
        "ceiling": procs.ceiling(workdir),
    }
    cells: list[dict[str, Any]] = []
    with procs.running(*servers.values()), httpx2.Client(timeout=30) as client:
        for rnd in range(1, opts.rounds + 1):
            for flow in protocol.FLOWS:
                for kind in KINDS:
                    cell = run_cell(client, server_for(servers, flow, kind), flow, kind, workdir, opts)
                    cell["round"] = rnd
                    cells.append(cell)
                    log(cell_line(cell))
    acked = sum(c["acked"] for c in cells if c["server"] == "gateway")
    return {"options": {"rounds": opts.rounds, "duration_s": opts.duration_s, "warmup_s": opts.warmup_s},
            "cells": cells, "summary": summarize(cells), "durability": durability(servers["gateway"], acked)}


def cell_line(cell: dict[str, Any]) -> str:
    head = f"  round {cell['round']} {cell['flow']:<13} {cell['server']:<9}"
    if "c32" not in cell:
        return f"{head} INVALID: {cell['error']}"
    c1, c32 = cell["c1"], cell["c32"]
    line = (f"{head} c32 {c32['rps']:>8.0f} req/s | c1 {c1['rps']:>6.0f} req/s "
            f"p50 {fmt_ms(c1['p50_ms'])} p99 {fmt_ms(c1['p99_ms'])}")
    return line if cell["valid"] else f"{line}  INVALID: {cell['error']}"


def fmt_ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}ms"


# -- summary --------------------------------------------------------------------------------
def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def metric(cell: dict[str, Any], name: str) -> float | None:
    """``c32_rps``, ``c1_p50_ms``, ``c1_p99_ms`` ... of a valid cell (None when invalid)."""
    if not cell["valid"]:
        return None
    conc, key = name.split("_", 1)
    value = cell[conc][key]
    return None if value is None else float(value)


#: (label, metric, other server, how): ``ratio`` is gateway / other, ``minus`` gateway - other.
COMPARISONS = (
    ("throughput_vs_baseline_json", "c32_rps", "baseline-json", "ratio"),
    ("throughput_vs_baseline_sse", "c32_rps", "baseline-sse", "ratio"),
    ("throughput_vs_ceiling", "c32_rps", "ceiling", "ratio"),
    ("p50_c1_minus_baseline_json_ms", "c1_p50_ms", "baseline-json", "minus"),
    ("p99_c1_vs_baseline_json", "c1_p99_ms", "baseline-json", "ratio"),
)


def summarize(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per (flow, server) and per-round comparisons of the gateway with each other server."""
    out: dict[str, Any] = {}
    rounds = sorted({c["round"] for c in cells})
    for flow in protocol.FLOWS:
        by = {(c["server"], c["round"]): c for c in cells if c["flow"] == flow}
        entry: dict[str, Any] = {"medians": {}, "ratios": {}}
        for kind in KINDS:
            entry["medians"][kind] = {
                name: median([v for r in rounds if (c := by.get((kind, r))) and (v := metric(c, name)) is not None])
                for name in ("c32_rps", "c1_rps", "c1_p50_ms", "c1_p99_ms", "c32_p99_ms")
            }
        for label, name, other, how in COMPARISONS:
            per_round = [round_compare(by, r, name, other, how) for r in rounds]
            entry["ratios"][label] = {"per_round": per_round,
                                      "median": median([x for x in per_round if x is not None])}
        out[flow] = entry
    return out


def round_compare(by: dict[tuple[str, int], dict[str, Any]], rnd: int, name: str, other: str,
                  how: str = "ratio") -> float | None:
    """The gateway's ``name`` against ``other``'s in round ``rnd`` (None when either cell is invalid)."""
    gw, ref = by.get(("gateway", rnd)), by.get((other, rnd))
    a = metric(gw, name) if gw else None
    b = metric(ref, name) if ref else None
    if a is None or b is None:
        return None
    if how == "minus":
        return a - b
    return a / b if b else None


# -- durability -----------------------------------------------------------------------------
def durability(gateway: procs.Server, acked: int) -> dict[str, Any]:
    """After the gateway stopped: its audit log holds a record for every acknowledged call."""
    import sqlite3

    db = gateway.workdir / "gateway-data" / "northstar.db"
    try:
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT count(*) FROM audit_log WHERE tool = 'echo' AND operation = 'ping'")
            audited = int(rows.fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return {"acknowledged_calls": acked, "audit_records": None, "ok": False,
                "error": traceback.format_exc(limit=1)}
    return {"acknowledged_calls": acked, "audit_records": audited, "ok": audited >= acked}
