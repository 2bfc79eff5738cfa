"""Audit appends per second under 32 concurrent callers, on SQLite and on PostgreSQL.

The measuring process (``python -m bench.audit_load --url URL --seconds S``, pinned to the
server core) opens the store in-process with :func:`northstar.storage.open_store`, sealed as a
gateway seals it (a key file and an anchor file in a temporary directory: the head's MAC on
every commit, anchors off the commit path), and runs 32 trio tasks appending records for S
seconds; each append returns only once its record is
committed (group commit). It prints one JSON line: appends/s, the flusher's batch statistics,
and the count the log reports committed, which must cover every acknowledged append.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

CONCURRENCY = 32


# -- the measuring child ----------------------------------------------------------------------
async def appenders(storage: Any, seconds: float, concurrency: int) -> int:
    import trio

    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < deadline:
            await storage.audit.append({"tenant": "bench", "tool": "echo", "operation": "ping",
                                        "decision": "allow", "user": f"u{w}", "i": i})
            i += 1
            count += 1

    async with trio.open_nursery() as nursery:
        for w in range(concurrency):
            nursery.start_soon(worker, w)
    return count


async def measure(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import tempfile

    from northstar.storage import open_seal, open_store

    keys = Path(tempfile.mkdtemp(prefix="northstar-audit-bench-"))
    seal = open_seal(keys / "audit.key", keys / "audit.anchors")
    async with open_store(url, audit_seal=seal) as storage:
        await appenders(storage, min(1.0, seconds / 4), concurrency)  # warm-up
        before = storage.audit.stats.appended, storage.audit.stats.flushes
        start = time.perf_counter()
        count = await appenders(storage, seconds, concurrency)
        elapsed = time.perf_counter() - start
        appended = storage.audit.stats.appended - before[0]
        flushes = storage.audit.stats.flushes - before[1]
        anchors = storage.audit.stats.anchors
    return {"appends_per_s": count / elapsed, "acknowledged": count, "committed": appended,
            "verified": appended >= count, "flushes": flushes, "mean_batch": appended / max(flushes, 1),
            "anchors": anchors, "seconds": round(elapsed, 2), "concurrency": concurrency}


async def child_main(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    if not url.startswith("postgres"):
        return await measure(url, seconds, concurrency)
    import trio_asyncio

    async with trio_asyncio.open_loop():
        return await measure(url, seconds, concurrency)


def main() -> None:
    import trio

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = ap.parse_args()
    print(json.dumps(trio.run(child_main, args.url, args.seconds, args.concurrency)), flush=True)


# -- the orchestrator's side ------------------------------------------------------------------
def run_child(url: str, seconds: float) -> dict[str, Any]:
    from bench import procs

    cmd = procs.pinned(procs.SERVER_CORE, [procs.PY, "-m", "bench.audit_load", "--url", url,
                                           "--seconds", f"{seconds:g}"])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False,
                          env=procs.clean_env())
    if done.returncode != 0:
        raise RuntimeError(f"audit load failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def audit_appends(workdir: Path, seconds: float, log: Any = print) -> dict[str, Any]:
    from bench import pg

    out: dict[str, Any] = {"sqlite": run_child(f"sqlite:///{workdir / 'audit-bench.db'}", seconds)}
    log(f"  sqlite: {out['sqlite']['appends_per_s']:.0f} appends/s (mean batch {out['sqlite']['mean_batch']:.1f})")
    reason = pg.unavailable_reason()
    if reason:
        out["postgres"] = {"skipped": reason}
        log(f"  postgres: skipped ({reason})")
        return out
    with pg.fresh_schema("bench_audit") as url:
        out["postgres"] = run_child(url, seconds)
    log(f"  postgres: {out['postgres']['appends_per_s']:.0f} appends/s "
        f"(mean batch {out['postgres']['mean_batch']:.1f})")
    return out


if __name__ == "__main__":
    main()
