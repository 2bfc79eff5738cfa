"""The performance targets, evaluated from one run's results (ratios from the same run).

Each target is ``{"target", "measured", "passed"}``; ``passed`` is None when the run did not
measure it (a section skipped with ``--only``, or every cell of a flow invalid), and the
"report only" rows (session and 2026-07-28 throughput against the baseline) carry no verdict.
"""

from __future__ import annotations

from typing import Any

from bench.protocol import FLOWS


def _ratio(results: dict[str, Any], flow: str, name: str) -> float | None:
    try:
        value = results["flows"]["summary"][flow]["ratios"][name]["median"]
    except (KeyError, TypeError):
        return None
    return None if value is None else float(value)


def row(target: str, measured: str, passed: bool | None) -> dict[str, Any]:
    return {"target": target, "measured": measured, "passed": passed}


def fmt(value: float | None, unit: str = "x") -> str:
    return "not measured" if value is None else f"{value:.2f}{unit}"


#: The added latency a governed call may have at c=1 beyond its one durable commit.
P50_SLACK_MS = 0.3


def flow_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for flow in FLOWS:
        r = _ratio(results, flow, "throughput_vs_ceiling")
        out.append(row(f"{flow}: c=32 throughput >= 0.90x the Hypercorn-trio ceiling", fmt(r),
                       None if r is None else r >= 0.90))
    for flow in FLOWS:
        r = _ratio(results, flow, "throughput_vs_baseline_json")
        if flow == "modern-2026":
            out.append(row(f"{flow}: c=32 throughput vs the SDK JSON server (report; uvicorn's ceiling is "
                           "above Hypercorn's)", fmt(r), None))
        else:
            out.append(row(f"{flow}: c=32 throughput >= 1.00x the SDK JSON server", fmt(r),
                           None if r is None else r >= 1.0))
    commit = (results.get("meta") or {}).get("sqlite_commit_ms")
    for flow in FLOWS:
        d = _ratio(results, flow, "p50_c1_minus_baseline_json_ms")
        bound = None if commit is None else float(commit) + P50_SLACK_MS
        label = (f"{flow}: c=1 p50 <= the SDK JSON server's + one durable commit + {P50_SLACK_MS} ms"
                 + ("" if bound is None else f" (= +{bound:.2f} ms)"))
        out.append(row(label, fmt(d, " ms above"), None if d is None or bound is None else d <= bound))
    return out


def other_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    stdio = results.get("stdio") or {}
    ready = stdio.get("median_ready_ms")
    label = "stdio ready (first tools/list reply) <= 1.00x the SDK's stdio server"
    if ready:
        ratio = ready["gateway"] / ready["baseline"]
        out.append(row(label, f"{ready['gateway']:.0f} ms vs {ready['baseline']:.0f} ms ({ratio:.2f}x)",
                       ratio <= 1.0))
    else:
        out.append(row(label, "not measured", None))
    per = ((results.get("memory") or {}).get("gateway") or {}).get("kib_per_session")
    out.append(row("idle session memory < 50 KiB each", fmt(per, " KiB"), None if per is None else per < 50))
    dur = (results.get("flows") or {}).get("durability") or {}
    if dur.get("audit_records") is not None:
        out.append(row("every acknowledged call's audit record is committed",
                       f"{dur['audit_records']} records for {dur['acknowledged_calls']} acknowledged calls",
                       bool(dur["ok"])))
    else:
        out.append(row("every acknowledged call's audit record is committed", "not measured", None))
    return out


def _upstream(results: dict[str, Any], name: str) -> float | None:
    try:
        value = results["upstreams"]["summary"]["ratios"][name]["median"]
    except (KeyError, TypeError):
        return None
    return None if value is None else float(value)


#: Federation: what northstar may add in front of an upstream, and how it must compare.
UPSTREAM_P50_ADDED_MS = 1.0
UPSTREAM_VS_DIRECT = 0.6
UPSTREAM_VS_CONTEXTFORGE = 50.0


def upstream_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    added = _upstream(results, "northstar_p50_c1_minus_direct_ms")
    direct = _upstream(results, "northstar_throughput_c32_vs_direct")
    cf = _upstream(results, "northstar_throughput_c32_vs_contextforge")
    why = ((results.get("upstreams") or {}).get("unavailable") or {}).get("contextforge")
    return [
        row(f"upstreams: northstar adds <= {UPSTREAM_P50_ADDED_MS:g} ms to the direct call's c=1 p50",
            fmt(added, " ms added"), None if added is None else added <= UPSTREAM_P50_ADDED_MS),
        row(f"upstreams: northstar's c=32 throughput >= {UPSTREAM_VS_DIRECT:g}x the direct call's", fmt(direct),
            None if direct is None else direct >= UPSTREAM_VS_DIRECT),
        row(f"upstreams: northstar's c=32 throughput >= {UPSTREAM_VS_CONTEXTFORGE:g}x ContextForge's",
            f"unavailable: {why}" if why else fmt(cf), None if cf is None else cf >= UPSTREAM_VS_CONTEXTFORGE),
    ]


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    return flow_targets(results) + upstream_targets(results) + other_targets(results)


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[passed]
