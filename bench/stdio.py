"""Stdio cold start: spawn the server and time what a client waits for before it can use a tool.

Claude Desktop spawns a stdio server on every launch. A client writes ``initialize``, waits for
its answer, sends ``notifications/initialized`` and ``tools/list``: the server is *ready* when the
``tools/list`` answer arrives (the headline figure); the ``initialize`` answer is a second column.
Each server is pinned to the server core; one untimed spawn first (creates the gateway's store
and warms the page cache), then ``runs`` timed spawns, alternating gateway and baseline.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import procs, protocol

READ_TIMEOUT_S = 60.0
INITIALIZE = protocol.compact({
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": protocol.HANDSHAKE, "capabilities": {}, "clientInfo": protocol.CLIENT_INFO},
}) + "\n"
INITIALIZED = protocol.compact({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n"
LIST_TOOLS = protocol.compact({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}) + "\n"


def commands(workdir: Path) -> dict[str, list[str]]:
    return {
        "gateway": [procs.PY, "-m", "northstar", "stdio", "--data-dir", str(workdir / "stdio-data")],
        "baseline": [procs.PY, "-m", "bench.baseline_server", "--stdio"],
    }


class LineReader:
    """Lines of a child's stdout, read with a deadline (no thread, no blocking read)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def line(self, deadline: float) -> bytes:
        """The next line, or b"" at EOF; TimeoutError past ``deadline``."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def reply(self, rpc_id: int, deadline: float) -> bytes:
        """The line answering ``rpc_id`` (notifications before it are skipped)."""
        while True:
            line = self.line(deadline)
            if not line:
                return line
            try:
                msg = json.loads(line)
            except ValueError:
                return line
            if isinstance(msg, dict) and msg.get("id") == rpc_id:
                return line


def check_initialize(line: bytes, name: str, log: Path) -> None:
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or reply.get("id") != 0 or "protocolVersion" not in reply.get("result", {}):
        tail = log.read_text("utf-8", "replace")[-2000:] if log.exists() else ""
        raise protocol.CheckFailed(f"{name}: not an initialize result on stdout: {line[:500]!r}\n{tail}")


def check_tools(line: bytes, name: str, log: Path) -> None:
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    tools = ((reply or {}).get("result") or {}).get("tools") if isinstance(reply, dict) else None
    if not isinstance(tools, list) or protocol.TOOL not in {t.get("name") for t in tools if isinstance(t, dict)}:
        tail = log.read_text("utf-8", "replace")[-2000:] if log.exists() else ""
        raise protocol.CheckFailed(f"{name}: no tools/list result naming {protocol.TOOL}: {line[:500]!r}\n{tail}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Close stdin (a stdio server's cue to exit), then terminate, then kill, each bounded."""
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    for action in (None, proc.terminate, proc.kill):
        if action is not None:
            action()
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.stdout is not None:
        proc.stdout.close()


def one_start(name: str, cmd: list[str], log: Path) -> tuple[float, float]:
    """Seconds from spawn to the ``initialize`` answer, and to the first ``tools/list`` answer."""
    with open(log, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(procs.pinned(procs.SERVER_CORE, cmd), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=procs.clean_env())
    try:
        assert proc.stdin is not None
        reader = LineReader(proc)
        deadline = time.monotonic() + READ_TIMEOUT_S
        proc.stdin.write(INITIALIZE.encode())
        proc.stdin.flush()
        line = reader.reply(0, deadline)
        initialized = time.perf_counter() - start
        check_initialize(line, name, log)
        proc.stdin.write((INITIALIZED + LIST_TOOLS).encode())
        proc.stdin.flush()
        line = reader.reply(1, deadline)
        ready = time.perf_counter() - start
        check_tools(line, name, log)
        return initialized, ready
    finally:
        stop(proc)


def cold_start(workdir: Path, runs: int, log: Any = print) -> dict[str, Any]:
    cmds = commands(workdir)
    init: dict[str, list[float]] = {name: [] for name in cmds}
    ready: dict[str, list[float]] = {name: [] for name in cmds}
    for name, cmd in cmds.items():
        one_start(name, cmd, workdir / f"stdio-{name}-warmup.log")
    for i in range(runs):
        for name, cmd in cmds.items():
            a, b = one_start(name, cmd, workdir / f"stdio-{name}.log")
            init[name].append(a)
            ready[name].append(b)
        log(f"  stdio run {i + 1}/{runs}: " + ", ".join(
            f"{n} ready {ready[n][-1] * 1000:.0f} ms (initialize {init[n][-1] * 1000:.0f})" for n in cmds))
    med_init = {name: statistics.median(t) * 1000 for name, t in init.items()}
    med_ready = {name: statistics.median(t) * 1000 for name, t in ready.items()}
    return {
        "runs": runs,
        "median_ms": med_init,
        "median_ready_ms": med_ready,
        "samples_ms": {name: [round(t * 1000, 1) for t in ts] for name, ts in init.items()},
        "samples_ready_ms": {name: [round(t * 1000, 1) for t in ts] for name, ts in ready.items()},
        "ratio_gateway_vs_baseline": med_init["gateway"] / med_init["baseline"],
        "ratio_ready_gateway_vs_baseline": med_ready["gateway"] / med_ready["baseline"],
    }
