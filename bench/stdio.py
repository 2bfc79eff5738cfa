"""Stdio cold start: spawn the server, write ``initialize``, time until its response line.

Claude Desktop spawns a stdio server on every launch, so this is the wait a user sees. Each
server is pinned to the server core; one untimed spawn first (creates the gateway's store and
warms the page cache), then ``runs`` timed spawns, alternating gateway and baseline.
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


def commands(workdir: Path) -> dict[str, list[str]]:
    return {
        "gateway": [procs.PY, "-m", "northstar", "stdio", "--data-dir", str(workdir / "stdio-data")],
        "baseline": [procs.PY, "-m", "bench.baseline_server", "--stdio"],
    }


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    """One line of the child's stdout, or b"" at EOF; TimeoutError past ``deadline``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no initialize response in time")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return buf
        buf += chunk
    return buf.split(b"\n", 1)[0]


def check_initialize(line: bytes, name: str, log: Path) -> None:
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or reply.get("id") != 0 or "protocolVersion" not in reply.get("result", {}):
        tail = log.read_text("utf-8", "replace")[-2000:] if log.exists() else ""
        raise protocol.CheckFailed(f"{name}: not an initialize result on stdout: {line[:500]!r}\n{tail}")


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


def one_start(name: str, cmd: list[str], log: Path) -> float:
    """Seconds from spawn to the ``initialize`` response line."""
    with open(log, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(procs.pinned(procs.SERVER_CORE, cmd), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=procs.clean_env())
    try:
        assert proc.stdin is not None
        proc.stdin.write(INITIALIZE.encode())
        proc.stdin.flush()
        line = read_line(proc, time.monotonic() + READ_TIMEOUT_S)
        elapsed = time.perf_counter() - start
        check_initialize(line, name, log)
        return elapsed
    finally:
        stop(proc)


def cold_start(workdir: Path, runs: int, log: Any = print) -> dict[str, Any]:
    cmds = commands(workdir)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for name, cmd in cmds.items():
        one_start(name, cmd, workdir / f"stdio-{name}-warmup.log")
    for i in range(runs):
        for name, cmd in cmds.items():
            times[name].append(one_start(name, cmd, workdir / f"stdio-{name}.log"))
        log(f"  stdio run {i + 1}/{runs}: " + ", ".join(f"{n} {t[-1] * 1000:.0f} ms" for n, t in times.items()))
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    return {
        "runs": runs,
        "median_ms": medians,
        "samples_ms": {name: [round(t * 1000, 1) for t in ts] for name, ts in times.items()},
        "ratio_gateway_vs_baseline": medians["gateway"] / medians["baseline"],
    }
