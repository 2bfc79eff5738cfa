"""Profile one server under load: py-spy samples it while wrk drives one flow at c=32.

    python -m bench.profile --flow modern-2026 --server gateway --seconds 10

Prints the self-time and inclusive-time tables of the hottest frames (and writes the raw
collapsed stacks under ``bench/results/profile/``), so a hot-path change can say where the
time went before and after it. Needs ``py-spy`` (installed with the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2

from bench import procs, protocol, wrk
from bench.flows import cell_script

OUT = Path(__file__).parent / "results" / "profile"


def start(kind: str, flow: str, workdir: Path, env: list[str]) -> procs.Server:
    if kind == "gateway":
        server = procs.gateway(workdir)
        server._env.update(dict(item.split("=", 1) for item in env))
        return server
    if kind == "baseline":
        return procs.baseline(workdir, stateless=flow == "stateless")
    return procs.ceiling(workdir)


def summarize(collapsed: Path, top: int) -> str:
    """Self and inclusive sample shares per frame, from py-spy's collapsed stacks."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "self %  frame"]
    lines += [f"{100 * n / total:6.1f}  {frame}" for frame, n in self_time.most_common(top)]
    lines += ["", "incl %  frame"]
    lines += [f"{100 * n / total:6.1f}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--flow", choices=protocol.FLOWS, default="modern-2026")
    ap.add_argument("--server", choices=("gateway", "baseline", "ceiling"), default="gateway")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--idle", action="store_true", help="also sample idle frames (waits in epoll)")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("bench.profile: py-spy is missing: pip install py-spy", file=sys.stderr)
        return 2
    procs.pin_self()
    OUT.mkdir(parents=True, exist_ok=True)
    with procs.workdir() as workdir:
        server = start(args.server, args.flow, workdir, args.gateway_env)
        with procs.running(server), httpx2.Client(timeout=30) as client:
            prepared = protocol.prepare(client, args.flow, args.server, server.url, procs.auth_for(server))
            protocol.precheck(client, server.url, prepared.request)
            script = cell_script(prepared).write(workdir / "profile.lua")
            url = f"{server.url}{prepared.request.path}"
            wrk.run(url, script, connections=args.connections, duration_s=2)
            collapsed = OUT / f"{args.server}-{args.flow}.txt"
            cmd = [spy, "record", "--pid", str(server.pid), "--format", "raw", "--output", str(collapsed),
                   "--duration", str(int(args.seconds) + 1), "--rate", "250", "--nonblocking"]
            if args.idle:
                cmd.append("--idle")
            spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result = wrk.run(url, script, connections=args.connections, duration_s=args.seconds)
            spy_proc.wait(timeout=args.seconds + 30)
    print(f"{args.server} {args.flow} c={args.connections}: {result.rps:.0f} req/s "
          f"({'valid' if result.valid else 'INVALID: ' + '; '.join(result.problems)})")
    print(summarize(collapsed, args.top))
    print(f"\ncollapsed stacks: {collapsed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
