"""Quick throughput numbers for the storage layer (a measurement script, not a test).

    .venv/bin/python bench/storage_load.py [seconds-per-case]

Audit appends/s with 32 concurrent appenders (group commit), draft saves/s with 1 and with 16
concurrent savers, on SQLite (synchronous=FULL, a temp file) and on PostgreSQL (a throw-away
schema at $NORTHSTAR_TEST_PG_URL or the local default) when a server answers.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import trio

from northstar.storage import Storage, open_store
from northstar.workbench.drafts.service import DraftService
from tests.pg import backend_url, pg_unavailable_reason


async def run_for(seconds: float, workers: int, op: object) -> float:
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < deadline:
            await op(w, i)  # type: ignore[operator]
            i += 1
            count += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for w in range(workers):
            nursery.start_soon(worker, w)
    return count / (time.perf_counter() - start)


async def bench(storage: Storage, seconds: float) -> dict[str, float]:
    drafts = DraftService(storage.store)
    spec = {"name": "echo", "description": "x" * 200, "input_schema": {"type": "object"}}

    async def append(w: int, i: int) -> None:
        await storage.audit.append({"tenant": "acme", "tool": "echo", "decision": "allow", "w": w, "i": i})

    async def save(w: int, i: int) -> None:
        await drafts.save_draft("acme", f"d{w}", {**spec, "i": i})

    out = {"audit appends/s (32 concurrent)": await run_for(seconds, 32, append)}
    flushes, appended = storage.audit.stats.flushes, storage.audit.stats.appended
    out["  mean audit batch"] = appended / max(flushes, 1)
    out["  audit appends/s (1 appender)"] = await run_for(seconds, 1, append)
    out["draft saves/s (1 saver)"] = await run_for(seconds, 1, save)
    out["draft saves/s (16 concurrent)"] = await run_for(seconds, 16, save)
    return out


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite", "postgres"):
            if backend == "postgres" and pg_unavailable_reason():
                print(f"postgres: skipped ({pg_unavailable_reason()})")
                continue
            async with backend_url(backend, Path(tmp)) as (url, _), open_store(url) as storage:
                for name, value in (await bench(storage, seconds)).items():
                    print(f"{backend:9s} {name:36s} {value:10.1f}")


if __name__ == "__main__":
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    trio.run(main, seconds)
