"""What tracing costs a governed call, in process: tracing off, on (spans dropped), on (kept in memory).

    python -m bench.telemetry --calls 2000 --rounds 5

Three runtimes of this tree in one process (SQLite in a temporary directory each), the same
``Gateway.call_tool`` of ``echo.ping`` (read-only: one combined audit record per call) from
``--callers`` concurrent tasks; the sides alternate, round after round, so the machine's drift
hits them alike. Reports the median microseconds per call of each side. The HTTP-level view of
the same question is ``python -m bench.ab --traced``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from northstar.common.config import Settings
from northstar.common.identity import RequestContext
from northstar.runtime import Runtime
from northstar.runtime.telemetry import DiscardExporter, Telemetry, from_environment, tracing_with

SIDES = ("off", "discard", "discard_inline", "memory")


def telemetry_for(side: str) -> Telemetry:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from northstar.common.telemetry import Meters

    if side == "off":
        return from_environment({})
    exporter = InMemorySpanExporter() if side == "memory" else DiscardExporter()
    tracing, provider = tracing_with(exporter, batch=side != "discard_inline")  # batched, as served
    return Telemetry(tracing, Meters(), provider)


async def timed(call: Callable[[], Any], calls: int, callers: int) -> tuple[float, float]:
    """Wall and CPU (the process's, every thread) microseconds per call, ``calls`` calls from
    ``callers`` tasks. On a shared machine CPU time is the steadier of the two."""
    each = calls // callers

    async def caller() -> None:
        for _ in range(each):
            await call()

    started, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    n = each * callers
    return (time.perf_counter() - started) * 1e6 / n, (time.process_time() - cpu) * 1e6 / n


async def run(calls: int, callers: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    per_call: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
    ctx = RequestContext(request_id="bench", tenant="bench", user="bench")
    with tempfile.TemporaryDirectory(prefix="northstar-telemetry-") as tmp:
        async with trio.open_nursery() as nursery:
            gateways: dict[str, Any] = {}
            stops: list[trio.Event] = []
            for side in SIDES:
                gateways[side] = await nursery.start(serve_one, Path(tmp) / side, telemetry_for(side), stops)
            for gateway in gateways.values():  # warm up
                await timed(lambda g=gateway: g.call_tool(ctx, "echo.ping", {"message": "hi"}), 200, callers)
            for _ in range(rounds):
                for side, gateway in gateways.items():
                    per_call[side].append(await timed(
                        lambda g=gateway: g.call_tool(ctx, "echo.ping", {"message": "hi"}), calls, callers))
            for stop in stops:
                stop.set()
    return per_call


async def serve_one(data_dir: Path, telemetry: Telemetry, stops: list[trio.Event], *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    settings = Settings.from_values({"data_dir": data_dir, "log_level": "WARNING",
                                     "rate_limit_per_principal_per_s": 1e9, "rate_limit_burst": 1_000_000_000})
    stop = trio.Event()
    stops.append(stop)
    async with Runtime(settings, telemetry=telemetry).running() as services:
        task_status.started(services.gateway)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.telemetry", description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--callers", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    per_call = trio.run(run, args.calls, args.callers, args.rounds)
    off_wall = statistics.median(w for w, _ in per_call["off"])
    off_cpu = statistics.median(c for _, c in per_call["off"])
    for side in SIDES:
        wall = statistics.median(w for w, _ in per_call[side])
        cpu = statistics.median(c for _, c in per_call[side])
        print(f"{side:8s} wall {wall:7.1f} us/call ({wall - off_wall:+.1f}), "
              f"cpu {cpu:7.1f} us/call ({cpu - off_cpu:+.1f} vs off); "
              f"cpu by round {[round(c) for _, c in per_call[side]]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
