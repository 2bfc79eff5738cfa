"""What sets the c=1 tail: every slow call, next to what the gateway was doing meanwhile.

    python -m bench.tail --flow modern-2026 --seconds 8

Starts a real gateway (pinned like the suite's) through this module's ``--serve`` mode, which
records, with the same monotonic clock as the client, every event that can hold a call up:
a trio task step longer than 0.5 ms (with the task's name), each writer-thread job (time to
start in its thread, time in SQLite, time to resume in trio), each WAL checkpoint and each
garbage collection. A one-connection keep-alive client (pinned to the load core) then sends
calls back to back for ``--seconds`` and records each call's send time and latency. The
report lists latency percentiles and, for the slowest calls, the events that overlapped
them. Diagnostic only: the recording wraps the gateway in memory and is never a way to run
northstar.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

from bench import procs, protocol, wrk
from bench.flows import cell_script

STEP_S = 0.0005
events: list[tuple[float, float, str, str]] = []  # (start, duration s, kind, detail)


def install() -> None:
    """Wrap the gateway's modules to record events (in the child process)."""
    import trio

    from northstar.storage import audit, sqlite, sqlite_ops

    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.t0 = 0.0

        def before_task_step(self, task: Any) -> None:
            self.t0 = time.monotonic()

        def after_task_step(self, task: Any) -> None:
            took = time.monotonic() - self.t0
            if took > STEP_S:
                events.append((self.t0, took, "step", task.name))

    original_run = audit.GroupCommitAuditLog.run

    async def run(self: Any, **kw: Any) -> None:
        trio.lowlevel.add_instrument(Steps())
        await original_run(self, **kw)

    audit.GroupCommitAuditLog.run = run  # type: ignore[method-assign]

    original_write = sqlite.SqliteDatabase.write

    async def write(self: Any, fn: Any, *args: Any) -> Any:
        t0 = time.monotonic()
        marks: list[float] = []

        def timed(conn: Any, *a: Any) -> Any:
            marks.append(time.monotonic())
            try:
                return fn(conn, *a)
            finally:
                marks.append(time.monotonic())

        try:
            return await original_write(self, timed, *args)
        finally:
            t3 = time.monotonic()
            if len(marks) == 2:
                detail = (f"{getattr(fn, '__name__', fn)} start {1e3 * (marks[0] - t0):.2f} ms, "
                          f"sqlite {1e3 * (marks[1] - marks[0]):.2f} ms, resume {1e3 * (t3 - marks[1]):.2f} ms")
                events.append((t0, t3 - t0, "write", detail))

    sqlite.SqliteDatabase.write = write  # type: ignore[method-assign]

    original_checkpoint = sqlite_ops.checkpoint
    nice = os.environ.get("BENCH_NICE")

    def checkpoint(conn: Any) -> Any:
        if nice:
            import threading

            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), int(nice))
        t0 = time.monotonic()
        result = original_checkpoint(conn)
        events.append((t0, time.monotonic() - t0, "checkpoint", f"busy, frames, done = {result}"))
        return result

    sqlite_ops.checkpoint = checkpoint

    gc_start: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[:] = [time.monotonic()]
        elif gc_start:
            events.append((gc_start[0], time.monotonic() - gc_start[0], "gc",
                           f"generation {info['generation']}, collected {info['collected']}"))

    gc.callbacks.append(on_gc)
    if os.environ.get("BENCH_SYNC"):  # e.g. OFF: what the commit costs without its fsync (never a way to run)
        original_init = sqlite.SqliteDatabase.__init__

        def init(self: Any, *a: Any, **kw: Any) -> None:
            original_init(self, *a, **{**kw, "synchronous": os.environ["BENCH_SYNC"]})

        sqlite.SqliteDatabase.__init__ = init  # type: ignore[method-assign]
    if os.environ.get("BENCH_CKPT"):  # a fixed checkpoint interval instead of the adaptive one
        sqlite.CHECKPOINT_EVERY_WRITES = int(os.environ["BENCH_CKPT"])
        sqlite.next_checkpoint_every = lambda frames, writes, current: current
    if os.environ.get("BENCH_GC0"):
        from northstar import cli

        freeze = cli.freeze_startup_heap

        def freeze_and_tune() -> None:
            freeze()
            gc.set_threshold(int(os.environ["BENCH_GC0"]), *gc.get_threshold()[1:])

        cli.freeze_startup_heap = freeze_and_tune


def serve(out: str, argv: list[str]) -> int:
    install()
    from northstar.cli import main

    try:
        return main(argv)
    finally:
        Path(out).write_text(json.dumps(events))


class Client:
    """One keep-alive HTTP/1.1 connection sending the flow's call; Content-Length or chunked answers."""

    def __init__(self, port: int, request: protocol.CallRequest) -> None:
        self.request = request
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
        self.connect()

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, request_id: int) -> bytes:
        body = self.request.body(request_id).encode()
        self.sock.sendall(f"POST {self.request.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.head}"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = self._until(b"\r\n\r\n").lower()
        if b"content-length:" in head:
            n = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            out = self._exactly(n)
        else:
            out = b""
            while (size := int(self._until(b"\r\n"), 16)) > 0:
                out += self._exactly(size)
                self._until(b"\r\n")
            self._until(b"\r\n")
        if b"connection: close" in head:  # e.g. the server's keep-alive request limit: reconnect, as wrk does
            self.sock.close()
            self.connect()
        return out

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(sep, 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def drive(port: int, request: protocol.CallRequest, seconds: float) -> list[tuple[float, float]]:
    client = Client(port, request)
    calls: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    i = 0
    while (t0 := time.monotonic()) < end:
        i += 1
        body = client.call(i)
        calls.append((t0, time.monotonic() - t0))
        if b'"pong":true' not in body:
            raise SystemExit(f"bad answer: {body[:300]!r}")
    return calls


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return serve(argv[1], argv[3:])
    ap = argparse.ArgumentParser(prog="python -m bench.tail", description=__doc__.split("\n\n")[0])
    ap.add_argument("--flow", choices=protocol.FLOWS, default="modern-2026")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=1, help="measured runs, one after the other")
    ap.add_argument("--show", type=int, default=15, help="slow calls to list")
    ap.add_argument("--baseline", action="store_true", help="also time the SDK baseline the same way")
    ap.add_argument("--variant", action="append", default=[], metavar="ENV=VALUE",
                    help="another gateway with this environment variable, measured alternately")
    ap.add_argument("--from-rank", type=float, default=0.0, help="start the list at this fraction (0.005: near p99.5)")
    ap.add_argument("--write-ms", type=float, default=3.0, help="list writer jobs longer than this")
    ap.add_argument("--wrk", action="store_true", help="also time each run with wrk at c=1, as the suite does")
    ap.add_argument("--load", type=float, default=0.0,
                    help="seconds of wrk at c=32 before each warm-up (as the suite's cells do)")
    args = ap.parse_args(argv)
    procs.pin_self()
    with procs.workdir() as workdir:
        out = workdir / "events.json"
        gateway = procs.gateway(workdir)
        cmd = list(gateway._cmd)
        at = cmd.index("-m")
        cmd[at:at + 2] = ["-m", "bench.tail", "--serve", str(out), "--"]
        gateway._cmd = cmd
        servers = [gateway]
        for n, variant in enumerate(args.variant, 1):
            key, _, value = variant.partition("=")
            other = procs.gateway(workdir, name=f"gateway-{key}-{value}")
            ocmd = list(other._cmd)
            at = ocmd.index("-m")
            ocmd[at:at + 2] = ["-m", "bench.tail", "--serve", str(workdir / f"v{n}.json"), "--"]
            other._cmd = ocmd
            other._env = {**(other._env or {}), key: value}
            servers.append(other)
        if args.baseline:
            servers.append(procs.baseline(workdir, stateless=args.flow == "stateless"))
        runs: dict[str, list[list[tuple[float, float]]]] = {s.name: [] for s in servers}
        with procs.running(*servers), httpx2.Client(timeout=30) as http:
            for _ in range(args.runs):
                for server in servers:
                    kind = "gateway" if server.name.startswith("gateway") else "baseline"
                    prepared = protocol.prepare(http, args.flow, kind, server.url, procs.auth_for(server))
                    if args.load:
                        script = cell_script(prepared).write(workdir / f"{server.name}.lua")
                        wrk.run(f"{server.url}{prepared.request.path}", script, connections=32,
                                duration_s=args.load)
                    drive(server.port, prepared.request, args.warmup)
                    runs[server.name].append(drive(server.port, prepared.request, args.seconds))
                    if args.wrk:
                        script = cell_script(prepared).write(workdir / f"{server.name}.lua")
                        url = f"{server.url}{prepared.request.path}"
                        wrk.run(url, script, connections=1, duration_s=args.warmup)
                        res = wrk.run(url, script, connections=1, duration_s=args.seconds)
                        print(f"{server.name} wrk c=1: {res.rps:.0f} req/s, p50 {res.p50_ms} ms, p99 {res.p99_ms} ms")
        recorded = [tuple(e) for e in json.loads(out.read_text())] if out.exists() else []
    for name, series in runs.items():
        for n, calls in enumerate(series, 1):
            lat = [ms * 1e3 for _, ms in calls]
            print(f"{name} run {n}: {len(calls)} calls, p50 {statistics.median(lat):.2f} ms, "
                  f"p90 {pct(lat, 0.9):.2f}, p99 {pct(lat, 0.99):.2f}, p99.9 {pct(lat, 0.999):.2f}, "
                  f"max {max(lat):.2f}")
    calls = [c for series in runs[gateway.name] for c in series]
    kinds: dict[str, list[float]] = {}
    for _, dur, kind, _ in recorded:
        kinds.setdefault(kind, []).append(dur * 1e3)
    for kind, durs in sorted(kinds.items()):
        print(f"events {kind}: {len(durs)}, p50 {statistics.median(durs):.2f} ms, p99 {pct(durs, 0.99):.2f}, "
              f"max {max(durs):.2f}")
    ranked = sorted(calls, key=lambda c: -c[1])
    start = int(len(ranked) * args.from_rank)
    print(f"\n{args.show} gateway calls from rank {start} (slowest first) and what overlapped them:")
    for t0, took in ranked[start:start + args.show]:
        print(f"- {took * 1e3:.2f} ms at +{t0 - calls[0][0]:.3f} s")
        for start, dur, kind, detail in recorded:
            if start < t0 + took and start + dur > t0 and (kind != "write" or dur > args.write_ms / 1e3):
                print(f"    {kind:10} {dur * 1e3:7.2f} ms  {detail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
