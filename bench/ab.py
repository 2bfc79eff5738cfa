"""Same-run A/B of two source trees: their gateways alternate under wrk, medians per side.

    git worktree add /tmp/before <commit>
    python -m bench.ab --flow modern-2026 /tmp/before .
    python -m bench.ab --traced --flow stateless /tmp/before .   # + the "after" tree tracing
    python -m bench.ab --flow stateless --upstream /tmp/before .   # the governed call of an upstream tool

``--traced`` adds a third side: the "after" tree with tracing on (``OTEL_TRACES_EXPORTER=discard``:
spans made and batched, then dropped), so one run shows what tracing costs when off (before
vs after) and when on (after vs traced).

The machine's speed drifts over minutes, so a before/after pair is only meaningful when both
sides run in the same minutes, alternating. Each round: a 1 s warm-up, a timed run at c=32
(throughput) and one at c=1 (p99), per side. Both gateways use the bench's settings.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path

import httpx2

from bench import procs, protocol, upstream, wrk
from bench.flows import cell_script

#: The traced side: every call's spans made and batched, then dropped (no exporter I/O).
TRACED_ENV = {"OTEL_TRACES_EXPORTER": "discard"}


class TreeServer(procs.Gateway):
    """A gateway started from another source tree (its own ``northstar`` package first)."""

    def __init__(self, root: Path, workdir: Path, name: str, env: dict[str, str] | None = None) -> None:
        base = procs.gateway(workdir, name=name)
        super().__init__(name, base._cmd, port=base.port, workdir=workdir, data_dir=base.data_dir,
                         env={**procs.GATEWAY_ENV, **(env or {})}, core=None)
        self._cmd = base._cmd
        self._env["PYTHONPATH"] = str(root)
        self.root = root

    def start(self) -> TreeServer:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self._cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log, env=self._env, cwd=str(self.root))
        return self


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--flow", choices=protocol.FLOWS, default="modern-2026")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--traced", action="store_true", help="a third side: the after tree with tracing on")
    ap.add_argument("--upstream", action="store_true",
                    help="time the governed call of an upstream tool (bench/upstream.py) instead of echo__ping")
    args = ap.parse_args(argv)
    if args.upstream and args.flow == "session-2025":
        ap.error("--upstream times the stateless or modern-2026 flow")
    procs.pin_self()
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    envs: dict[str, dict[str, str]] = {}
    if args.traced:
        sides["traced"] = sides["after"]
        envs["traced"] = TRACED_ENV
    rps: dict[str, list[float]] = {k: [] for k in sides}
    p99: dict[str, list[float]] = {k: [] for k in sides}
    p50: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}  # the gateway's CPU per call at c=32 (robust to load)
    with procs.workdir() as workdir:
        servers = {k: TreeServer(root, workdir, f"gw-{k}", envs.get(k)) for k, root in sides.items()}
        upstream_server = [upstream.upstream_server(workdir)] if args.upstream else []
        with procs.running(*upstream_server, *servers.values()), httpx2.Client(timeout=30) as client:
            targets = {}
            for side, server in servers.items():
                if upstream_server:
                    prepared = upstream.northstar_target(client, server, upstream_server[0], args.flow)
                else:
                    prepared = protocol.prepare(client, args.flow, "gateway", server.url, server.caller_headers())
                protocol.precheck(client, server.url, prepared.request)
                script = cell_script(prepared).write(workdir / f"{side}.lua")
                targets[side] = (f"{server.url}{prepared.request.path}", script)
            for _ in range(args.rounds):
                for side, (url, script) in targets.items():
                    wrk.run(url, script, connections=32, duration_s=1)
                    used = servers[side].cpu_s()
                    busy = wrk.run(url, script, connections=32, duration_s=args.seconds)
                    if not busy.valid:  # once more: on a shared machine a run can fail to start
                        print(f"{side}: retrying an invalid run: {busy.problems}")
                        used = servers[side].cpu_s()
                        busy = wrk.run(url, script, connections=32, duration_s=args.seconds)
                    cpu[side].append((servers[side].cpu_s() - used) / max(1, busy.requests) * 1e6)
                    # wrk takes whole seconds
                    quiet = wrk.run(url, script, connections=1, duration_s=max(1, round(args.seconds / 2)))
                    if not (busy.valid and quiet.valid):
                        raise SystemExit(f"{side}: invalid run: {busy.problems + quiet.problems}\n"
                                         f"{servers[side].log_tail()}")
                    rps[side].append(busy.rps)
                    p99[side].append(quiet.p99_ms or 0.0)
                    p50[side].append(quiet.p50_ms or 0.0)
    for side, root in sides.items():
        print(f"{side:6s} {root}: c=32 median {statistics.median(rps[side]):.0f} req/s "
              f"{[round(x) for x in rps[side]]}; c=1 p50 median {statistics.median(p50[side]):.2f} ms, "
              f"p99 median {statistics.median(p99[side]):.2f} ms; gateway CPU per call at c=32 median "
              f"{statistics.median(cpu[side]):.0f} us {[round(x) for x in cpu[side]]}")
    change = statistics.median(rps["after"]) / statistics.median(rps["before"]) - 1
    print(f"change in c=32 throughput: {change:+.0%}")
    if args.traced:
        traced = statistics.median(rps["traced"]) / statistics.median(rps["after"]) - 1
        print(f"tracing on vs off (after tree), c=32 throughput: {traced:+.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
