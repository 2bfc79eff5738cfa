"""``python -m bench`` (``make bench``): the northstar benchmark suite.

    python -m bench                      # everything: 3 rounds, 8 s cells (~15 min)
    python -m bench --quick              # smoke run: 1 round, 3 s cells, 100 sessions
    python -m bench --only flows --only stdio   # some sections (others kept from latest.json)
    python -m bench --only upstreams --no-contextforge   # federation: direct vs northstar (vs ContextForge)
    python -m bench --rounds 5 --duration 10 --sessions 1000 --stdio-runs 10

Writes bench/results/latest.json (+ runs/<timestamp>.json), bench/results/latest.png and the
"Latest figures" section of docs/performance.md; prints the same tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import audit_load, chart, drafts, flows, memory, procs, report, stdio, targets, upstream

SECTIONS = ("flows", "upstreams", "stdio", "memory", "drafts", "audit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 3 s cells, 100 sessions, 3 stdio runs")
    ap.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    ap.add_argument("--rounds", type=int, help="alternating rounds of the flow matrix (default 3)")
    ap.add_argument("--duration", type=float, help="seconds per measured wrk run (default 8)")
    ap.add_argument("--warmup", type=float, help="seconds of the warm-up run before each (default 2)")
    ap.add_argument("--sessions", type=int, help="idle sessions for the memory measurement (default 1000)")
    ap.add_argument("--stdio-runs", type=int, help="timed spawns per stdio server (default 10)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    ap.add_argument("--no-contextforge", action="store_true",
                    help="upstreams: leave ContextForge out (it runs when `make bench-contextforge` installed it)")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the gateway (e.g. NORTHSTAR_FAST_PATH=false for an A/B run)")
    args = ap.parse_args(argv)
    for item in args.gateway_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("NORTHSTAR_"):
            ap.error(f"--gateway-env takes NORTHSTAR_KEY=VALUE, not {item!r}")
        procs.GATEWAY_ENV[key] = value
    defaults = {"rounds": 1, "duration": 3.0, "warmup": 1.0, "sessions": 100, "stdio_runs": 3} if args.quick \
        else {"rounds": 3, "duration": 8.0, "warmup": 2.0, "sessions": 1000, "stdio_runs": 10}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = tuple(args.only or SECTIONS)
    return args


def git(*cmd: str) -> str:
    try:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except OSError:
        return ""


def commit_label() -> str:
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"  # uvloop / httptools: the baselines then run on asyncio and h11


def meta(args: argparse.Namespace) -> dict[str, Any]:
    packages = ("mcp", "hypercorn", "uvicorn", "uvloop", "httptools", "trio")
    return {
        "mode": "quick" if args.quick else "full", "rounds": args.rounds, "duration_s": args.duration,
        "warmup_s": args.warmup, "sessions": args.sessions, "stdio_runs": args.stdio_runs,
        "sections": list(args.sections), "commit": commit_label(), "cores": os.cpu_count(),
        "python": platform.python_version(), "wrk": procs.wrk_version(),
        "versions": ", ".join(f"{p} {installed(p)}" for p in packages),
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "loadavg_at_start": loadavg(),
        "sqlite_commit_ms": round(procs.commit_latency_ms(), 2),
    }


def loadavg() -> list[float]:
    """The machine's 1/5/15-minute load averages (the suite itself adds about 2 while it runs)."""
    return [round(x, 2) for x in os.getloadavg()]


def section_runners(args: argparse.Namespace, work: Path) -> dict[str, Callable[[], dict[str, Any]]]:
    opts = flows.FlowOptions(rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup)
    return {
        "flows": lambda: flows.run_matrix(opts, work),
        "upstreams": lambda: upstream.run(work, opts, contextforge=not args.no_contextforge),
        "stdio": lambda: stdio.cold_start(work, args.stdio_runs),
        "memory": lambda: memory.idle_sessions(work, args.sessions),
        "drafts": lambda: drafts.draft_saves(work, args.duration, args.warmup),
        "audit": lambda: audit_load.audit_appends(work, args.duration),
    }


def run_sections(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with procs.workdir() as work:
        runners = section_runners(args, work)
        for name in args.sections:
            print(f"== {name}", flush=True)
            started = time.monotonic()
            try:
                results[name] = runners[name]()
                results[name]["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                results[name]["elapsed_s"] = round(time.monotonic() - started, 1)
                results[name]["commit"] = commit_label()
            except Exception:
                errors[name] = traceback.format_exc()
                print(f"   {name} FAILED:\n{errors[name]}", flush=True)
    return results, errors


def carry_over(results: dict[str, Any], latest: Path) -> None:
    """With --only, keep the other sections of the previous latest.json, marked as carried over."""
    try:
        previous = json.loads(latest.read_text())
    except (OSError, ValueError):
        return
    for name in SECTIONS:
        if name not in results and isinstance(previous.get(name), dict):
            results[name] = {**previous[name], "carried_over": True}


def preflight(args: argparse.Namespace) -> bool:
    if procs.cores() < 2:
        print("bench: needs 2 cores (servers on core 0, load on core 1)", file=sys.stderr)
        return False
    if {"flows", "drafts", "upstreams"} & set(args.sections) and procs.ensure_wrk() is None:
        print("bench: wrk is required and could not be installed", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not preflight(args):
        return 2
    can_draw = procs.ensure_matplotlib()
    procs.pin_self()
    started = time.monotonic()
    results: dict[str, Any] = {"meta": meta(args)}
    measured, errors = run_sections(args)
    results.update(measured)
    if errors:
        results["errors"] = errors
    if args.only:
        carry_over(results, report.RESULTS_DIR / "latest.json")
    results["meta"]["finished_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results["meta"]["loadavg_at_end"] = loadavg()
    results["targets"] = targets.evaluate(results)
    write_outputs(results, args, can_draw)
    return 1 if errors else 0


def write_outputs(results: dict[str, Any], args: argparse.Namespace, can_draw: bool) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    latest = report.write_json(results, stamp)
    section = report.render(results)
    print("\n" + section + "\n")
    print(f"bench: results in {latest}")
    if can_draw and (fl := results.get("flows")):
        o = fl.get("options", {})
        title = (f"northstar bench, tools/call of echo__ping, measured {fl.get('measured_at')} "
                 f"({o.get('rounds')} rounds x {o.get('duration_s')} s, medians; {fl.get('commit')})")
        print(f"bench: chart in {chart.draw(fl, report.RESULTS_DIR / 'latest.png', title)}")
    if not args.no_docs:
        report.update_doc(section)
        print(f"bench: updated {report.DOC}")
    print(f"bench: took {results['meta']['elapsed_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
