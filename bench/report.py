"""Rendering results: markdown tables (printed, and written into docs/performance.md), JSON files.

``docs/performance.md`` keeps hand-written prose; only the text between
:data:`BEGIN` and :data:`END` is regenerated from ``bench/results/latest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import targets
from bench.flows import KINDS
from bench.protocol import FLOWS, UPSTREAM_KINDS

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def num(value: Any, spec: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def ratio_cell(entry: dict[str, Any], unit: str = "x") -> str:
    per_round = " / ".join(num(x, ".2f") for x in entry["per_round"])
    return f"**{num(entry['median'], '.2f', unit)}** ({per_round})"


def section_note(section: dict[str, Any] | None) -> str:
    if not section:
        return ""
    carried = ", carried over from an earlier run" if section.get("carried_over") else ""
    opts = section.get("options")
    how = f", {opts['rounds']} rounds of {opts['duration_s']:g} s cells" if opts else ""
    return f"_measured {section.get('measured_at', '?')} on `{section.get('commit', '?')}`{how}{carried}_\n\n"


def flows_md(flows: dict[str, Any]) -> str:
    summary = flows["summary"]
    rows = []
    for flow in FLOWS:
        for kind in KINDS:
            m = summary[flow]["medians"].get(kind)
            if m is None:  # a section carried over from a run with other servers
                continue
            valid = sum(1 for c in flows["cells"] if c["flow"] == flow and c["server"] == kind and c["valid"])
            total = sum(1 for c in flows["cells"] if c["flow"] == flow and c["server"] == kind)
            rows.append([flow, kind, num(m.get("c32_rps")), num(m.get("c32_p99_ms"), ".2f"),
                         num(m.get("c1_rps")), num(m.get("c1_p50_ms"), ".2f"), num(m.get("c1_p99_ms"), ".2f"),
                         f"{valid}/{total}"])
    out = table(["flow", "server", "c=32 req/s", "c=32 p99 ms", "c=1 req/s", "c=1 p50 ms", "c=1 p99 ms",
                 "valid rounds"], rows)
    labels = (("throughput_vs_baseline_json", "c=32 req/s vs SDK JSON"),
              ("throughput_vs_baseline_sse", "c=32 req/s vs SDK default (SSE)"),
              ("throughput_vs_ceiling", "c=32 req/s vs Hypercorn-trio ceiling"),
              ("p50_c1_minus_baseline_json_ms", "c=1 p50 minus SDK JSON's (ms)"),
              ("p99_c1_vs_baseline_json", "c=1 p99 vs SDK JSON"))
    labels = tuple((k, label) for k, label in labels if all(k in summary[f]["ratios"] for f in FLOWS))
    ratio_rows = [[flow, *(ratio_cell(summary[flow]["ratios"][k], unit="ms" if k.endswith("_ms") else "x")
                           for k, _ in labels)] for flow in FLOWS]
    out += ("\n\nThe gateway against each other server, median of the per-round figures (each round's in "
            "brackets). Headline baseline: the SDK's `MCPServer` on uvicorn with `json_response=True`, "
            "its fastest configuration; the SDK's default configuration (SSE-framed answers) is the "
            "second row of comparisons:\n\n")
    out += table(["flow", *(label for _, label in labels)], ratio_rows)
    dur = flows.get("durability") or {}
    if dur:
        out += (f"\n\nDurability: {dur.get('audit_records')} `echo.ping` audit records committed for "
                f"{dur.get('acknowledged_calls')} calls the gateway acknowledged "
                f"({'every acknowledged call audited' if dur.get('ok') else 'MISSING RECORDS'}).")
    return out


UPSTREAM_LABELS = (
    ("northstar_p50_c1_minus_direct_ms", "northstar c=1 p50 minus direct's", "ms"),
    ("relay_p50_c1_minus_direct_ms", "relay (the floor) c=1 p50 minus direct's", "ms"),
    ("northstar_p50_c1_minus_relay_ms", "northstar c=1 p50 minus the relay's", "ms"),
    ("paced_p50_c1_minus_direct_ms", "direct-paced c=1 p50 minus direct's (the upstream idle between calls)", "ms"),
    ("northstar_p50_c1_minus_paced_ms", "northstar c=1 p50 minus direct-paced's", "ms"),
    ("relay_throughput_c32_vs_direct", "relay c=32 req/s vs direct", "x"),
    ("northstar_throughput_c32_vs_direct", "northstar c=32 req/s vs direct", "x"),
    ("northstar_throughput_c32_vs_contextforge", "northstar c=32 req/s vs ContextForge", "x"),
    ("northstar_throughput_c1_vs_contextforge", "northstar c=1 req/s vs ContextForge", "x"),
    ("contextforge_p50_c1_minus_direct_ms", "ContextForge c=1 p50 minus direct's", "ms"),
)


def upstreams_md(up: dict[str, Any]) -> str:
    """The federation table: the upstream's tool called directly and through each gateway."""

    medians, unavailable = up["summary"]["medians"], up.get("unavailable") or {}
    rows = []
    for kind in UPSTREAM_KINDS:
        if kind in unavailable:
            rows.append([kind, *(["-"] * 7), f"unavailable: {unavailable[kind]}"])
            continue
        cells = [c for c in up["cells"] if c["server"] == kind]
        if not cells:
            continue
        m = medians[kind]
        rows.append([kind, num(m.get("c1_rps")), num(m.get("c1_p50_ms"), ".2f"), num(m.get("c1_p99_ms"), ".2f"),
                     num(m.get("c32_rps")), num(m.get("c32_p99_ms"), ".2f"), num(m.get("c1_gateway_cpu_us")),
                     num(m.get("c1_upstream_cpu_us")), f"{sum(1 for c in cells if c['valid'])}/{len(cells)}"])
    out = table(["path", "c=1 req/s", "c=1 p50 ms", "c=1 p99 ms", "c=32 req/s", "c=32 p99 ms",
                 "gateway CPU us/call (c=1)", "upstream CPU us/call (c=1)", "valid rounds"], rows)
    ratios = up["summary"]["ratios"]
    ratio_rows = [[label, ratio_cell(ratios[key], unit=unit)]
                  for key, label, unit in UPSTREAM_LABELS if key in ratios and ratios[key]["median"] is not None]
    pauses = [str(c["pause_ms"]) for c in up["cells"] if c["server"] == "direct-paced" and "pause_ms" in c]
    out += ("\n\nComparisons, median of the per-round figures (each round's in brackets); each ratio's "
            "baseline is named in its row:\n\n")
    out += table(["comparison", "median (per round)"], ratio_rows)
    if pauses:
        out += (f"\n\n`direct-paced` paused {' / '.join(pauses)} ms before each call (per round): the round's "
                "northstar c=1 p50 minus direct's, in wrk's whole milliseconds.")
    out += phases_md(medians)
    bad = [c for c in up["cells"] if not c["valid"]]
    out += "".join(f"\n- round {c['round']} {c['server']} INVALID: {(c.get('error') or '?').splitlines()[0][:300]}"
                   for c in bad)
    return out


PHASE_COLUMNS = ("front", "dispatch", "upstream", "result", "tool", "audit", "reply", "total")


def phases_md(medians: dict[str, Any]) -> str:
    """Where northstar's time went: each phase's p50 (``GET /v1/ops/phases``), median over rounds."""
    rows = []
    for kind in ("northstar", "northstar-local"):
        for conc in ("c1", "c32"):
            found = (medians.get(kind) or {}).get(f"{conc}_phases_p50_us")
            if found:
                cells = (num(found[col]) if col in found else "-" for col in PHASE_COLUMNS)
                rows.append([kind, conc.replace("c", "c="), *cells])
    if not rows:
        return ""
    return ("\n\nWhere northstar's time went, from its own `GET /v1/ops/phases` over each run's calls: "
            "each phase's p50 in µs, median over rounds (`-`: the phase is not on that path). Phases: "
            "`front` request read to the gate chain's answer; `dispatch` to the upstream request written; "
            "`upstream` to its reply read; `result` the reply checked; `tool` a built-in tool's run; "
            "`audit` the record committed; `reply` the answer written. Medians of phases do not add up "
            "to the median total:\n\n" + table(["path", "conc.", *PHASE_COLUMNS], rows))


def errors_md(flows: dict[str, Any]) -> str:
    bad = [c for c in flows["cells"] if not c["valid"]]
    if not bad:
        return ""
    lines = ["", "Invalid cells (full text in `bench/results/latest.json`):", ""]
    for c in bad:
        first = (c.get("error") or "").splitlines()[0][:300] if c.get("error") else "?"
        lines.append(f"- round {c['round']} {c['flow']} {c['server']}: {first}")
    return "\n".join(lines)


def stdio_md(stdio: dict[str, Any]) -> str:
    """Ready (the first ``tools/list`` reply: what a client waits for) and ``initialize``, per server."""
    ready, init = stdio.get("median_ready_ms") or {}, stdio.get("median_ms") or {}
    samples = stdio.get("samples_ready_ms") or stdio.get("samples_ms") or {}
    rows = [[k, num(ready.get(k), ".0f"), num(init.get(k), ".0f"), ", ".join(f"{x:.0f}" for x in samples.get(k, []))]
            for k in init]
    return table(["server", "median ms to the first tools/list reply (ready)", "median ms to initialize reply",
                  "ready samples ms"], rows)


def memory_md(memory: dict[str, Any]) -> str:
    rows = [[k, str(v["sessions"]), str(v["rss0_kib"]), str(v["rss_kib"]), num(v["kib_per_session"], ".1f")]
            for k, v in memory.items() if isinstance(v, dict) and "rss_kib" in v]
    return table(["server", "sessions", "RSS idle KiB", "RSS with sessions KiB", "KiB per session"], rows)


def store_md(section: dict[str, Any], rate_key: str, label: str) -> str:
    rows = []
    for store in ("sqlite", "postgres"):
        r = section.get(store) or {}
        if "skipped" in r:
            rows.append([store, "skipped", r["skipped"]])
            continue
        check = "verified" if r.get("verified") else "NOT VERIFIED"
        extra = f"mean batch {r['mean_batch']:.1f}" if "mean_batch" in r else f"p99 {num(r.get('p99_ms'), '.1f')} ms"
        rows.append([store, num(r.get(rate_key)), f"{r.get('acknowledged')} acked, {check}; {extra}"])
    return table(["store", label, "check"], rows)


def targets_md(results: dict[str, Any]) -> str:
    rows = [[t["target"], t["measured"], targets.verdict(t["passed"])] for t in targets.evaluate(results)]
    return table(["target", "measured", "verdict"], rows)


def render(results: dict[str, Any]) -> str:
    """The whole "Latest figures" section as markdown."""
    meta = results.get("meta", {})
    parts = [f"Run {meta.get('finished_at', '?')} on `{meta.get('commit', '?')}`, mode **{meta.get('mode', '?')}** "
             f"({meta.get('rounds', '?')} rounds, {meta.get('duration_s', '?')} s cells), "
             f"{meta.get('cores', '?')} cores, {meta.get('versions', '')}; total {meta.get('elapsed_s', '?')} s; "
             f"load average {meta.get('loadavg_at_start', '?')} at start, {meta.get('loadavg_at_end', '?')} at end; "
             f"one durable SQLite commit (WAL, synchronous=FULL, an fsync) on the data dirs' filesystem takes "
             f"{meta.get('sqlite_commit_ms', '?')} ms."]
    if flows := results.get("flows"):
        parts += ["### Tool calls (`tools/call` of `echo__ping`)", section_note(flows) + flows_md(flows)
                  + errors_md(flows), "![throughput and p99 latency](../bench/results/latest.png)"]
    if up := results.get("upstreams"):
        o = up.get("options", {})
        parts += [f"### Upstreams (`tools/call` of an SDK JSON server's `echo`, northstar flow "
                  f"`{o.get('northstar_flow', '?')}`)", section_note(up) + upstreams_md(up)]
    if stdio := results.get("stdio"):
        parts += ["### Stdio cold start", section_note(stdio) + stdio_md(stdio)]
    if memory := results.get("memory"):
        parts += ["### Memory per idle session", section_note(memory) + memory_md(memory)]
    if drafts := results.get("drafts"):
        parts += ["### Draft saves (REST, c=32)", section_note(drafts) + store_md(drafts, "saves_per_s", "saves/s")]
    if audit := results.get("audit"):
        parts += ["### Audit appends (in-process, 32 concurrent callers)",
                  section_note(audit) + store_md(audit, "appends_per_s", "appends/s")]
    if errors := results.get("errors"):
        parts += ["### Sections that failed", "\n".join(f"- {k}: {v.splitlines()[0][:300]}"
                                                        for k, v in errors.items())]
    parts += ["### Targets", targets_md(results)]
    return "\n\n".join(parts)


def write_json(results: dict[str, Any], stamp: str, out_dir: Path = RESULTS_DIR) -> Path:
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=False) + "\n"
    (out_dir / "runs" / f"{stamp}.json").write_text(text)
    latest = out_dir / "latest.json"
    latest.write_text(text)
    return latest


def update_doc(section: str, doc: Path = DOC) -> None:
    """Replace the text between the markers (append the markers if the doc has none)."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    block = f"{BEGIN}\n<!-- generated by `python -m bench` from bench/results/latest.json -->\n\n{section}\n\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Latest figures\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
