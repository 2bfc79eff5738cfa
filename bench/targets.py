"""The issue's targets, evaluated from one run's results (ratios from the same run).

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


def flow_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for flow in FLOWS:
        r = _ratio(results, flow, "throughput_vs_ceiling")
        out.append(row(f"{flow}: c=32 throughput >= 0.70x the Hypercorn-trio ceiling", fmt(r),
                       None if r is None else r >= 0.70))
    for flow in FLOWS:
        r = _ratio(results, flow, "throughput_vs_baseline")
        if flow == "stateless":
            out.append(row("stateless: c=32 throughput >= 1.00x the SDK baseline", fmt(r),
                           None if r is None else r >= 1.0))
        else:
            out.append(row(f"{flow}: c=32 throughput vs the SDK baseline (report, as high as possible)",
                           fmt(r), None))
    for flow in FLOWS:
        r = _ratio(results, flow, "p99_c1_vs_baseline")
        out.append(row(f"{flow}: c=1 p99 latency <= 1.30x the SDK baseline's", fmt(r),
                       None if r is None else r <= 1.30))
    return out


def other_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    stdio = results.get("stdio") or {}
    med = stdio.get("median_ms")
    if med:
        out.append(row("stdio cold start to initialize <= the SDK baseline's stdio server",
                       f"{med['gateway']:.0f} ms vs {med['baseline']:.0f} ms "
                       f"({stdio['ratio_gateway_vs_baseline']:.2f}x)", med["gateway"] <= med["baseline"]))
    else:
        out.append(row("stdio cold start to initialize <= the SDK baseline's stdio server", "not measured", None))
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


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    return flow_targets(results) + other_targets(results)


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[passed]
