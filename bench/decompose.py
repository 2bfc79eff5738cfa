"""Where a governed call's time goes: the gateway with parts of the call path replaced.

    python -m bench.decompose --flow modern-2026 --rounds 3

Runs, alternating with the ceiling, four builds of the same tree (each a real gateway
process started through this module's ``--serve`` mode, which patches it in memory):

* ``fixed_front``: the gateway's server layer answers every ``/mcp`` POST with the ceiling's
  fixed reply (no front door, no MCP work);
* ``fixed_fast``: front door and fast path run (auth, checks, parse, routing) but the call
  itself returns a fixed result;
* ``noaudit``: everything runs except that audit appends return at once;
* ``full``: the gateway as shipped.

The differences between neighbours are what each layer costs per request. Diagnostic only:
the patched builds are never a way to run northstar.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import httpx2

from bench import procs, protocol, wrk
from bench.flows import cell_script

VARIANTS = ("fixed_front", "fixed_fast", "noaudit", "full")


def patch(variant: str) -> None:
    """Apply ``variant``'s replacement to the northstar modules (in the child process)."""
    from bench import ceiling_server
    from northstar.mcp_gateway.transports.http import fastpath
    from northstar.mcp_gateway.transports.http import front_door as asgi
    from northstar.policy.calls import CallResult
    from northstar.storage import audit

    if variant == "fixed_front":
        original = asgi.FrontDoor.__call__

        async def fixed_front(self: Any, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/mcp":
                more = True
                while more:
                    more = (await receive()).get("more_body", False)
                await send({"type": "http.response.start", "status": 200, "headers": ceiling_server.HEADERS})
                await send({"type": "http.response.body", "body": ceiling_server.BODY})
                return
            await original(self, scope, receive, send)

        asgi.FrontDoor.__call__ = fixed_front  # type: ignore[method-assign]
    elif variant == "fixed_fast":
        result = CallResult(ok=True, output={"pong": True, "message": "hi", "data": None, "received_at": "x"})

        async def fixed_call(self: Any, ctx: Any, params: Any, *args: Any) -> Any:
            return result

        fastpath.FastPath.call = fixed_call  # type: ignore[method-assign]
    elif variant == "noaudit":
        class Entry:  # what a caller reads of an AuditEntry
            seq = 0
            tenant_seq = None

        async def no_append(self: Any, record: Any) -> Any:
            import trio

            await trio.lowlevel.checkpoint()
            return Entry()

        audit.GroupCommitAuditLog.append = no_append  # type: ignore[method-assign]


def serve(variant: str, argv: list[str]) -> int:
    patch(variant)
    from northstar.cli import main

    return main(argv)


def start(variant: str, workdir: Any) -> procs.Server:
    server = procs.gateway(workdir, name=f"gw-{variant}")
    cmd = list(server._cmd)
    at = cmd.index("-m")
    cmd[at:at + 2] = ["-m", "bench.decompose", "--serve", variant, "--"]
    server._cmd = cmd
    return server


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return serve(argv[1], argv[3:])
    ap = argparse.ArgumentParser(prog="python -m bench.decompose", description=__doc__.split("\n\n")[0])
    ap.add_argument("--flow", choices=protocol.FLOWS, default="modern-2026")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--connections", type=int, default=32, help="1 for latency (p50 / p99 are printed too)")
    args = ap.parse_args(argv)
    procs.pin_self()
    rps: dict[str, list[float]] = {v: [] for v in (*VARIANTS, "ceiling")}
    p50: dict[str, list[float]] = {v: [] for v in rps}
    p99: dict[str, list[float]] = {v: [] for v in rps}
    with procs.workdir() as workdir:
        servers = {v: start(v, workdir) for v in VARIANTS}
        servers["ceiling"] = procs.ceiling(workdir)
        with procs.running(*servers.values()), httpx2.Client(timeout=30) as client:
            targets = {}
            for name, server in servers.items():
                kind = "ceiling" if name == "ceiling" else "gateway"
                prepared = protocol.prepare(client, args.flow, kind, server.url, procs.auth_for(server))
                protocol.precheck(client, server.url, prepared.request)
                targets[name] = (f"{server.url}{prepared.request.path}",
                                 cell_script(prepared).write(workdir / f"{name}.lua"))
            for _ in range(args.rounds):
                for name, (url, script) in targets.items():
                    wrk.run(url, script, connections=args.connections, duration_s=1)
                    run = wrk.run(url, script, connections=args.connections, duration_s=args.seconds)
                    if not run.valid:
                        raise SystemExit(f"{name}: invalid run: {run.problems}")
                    rps[name].append(run.rps)
                    p50[name].append(run.p50_ms or 0.0)
                    p99[name].append(run.p99_ms or 0.0)
    ceiling = statistics.median(rps["ceiling"])
    print(f"{args.flow}, c={args.connections}, medians of {args.rounds} rounds")
    print("| what runs | req/s | us per request | vs ceiling | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for name in ("ceiling", *VARIANTS):
        med = statistics.median(rps[name])
        print(f"| {name} | {med:,.0f} | {1e6 / med:,.0f} | {med / ceiling:.2f}x | "
              f"{statistics.median(p50[name]):.3f} | {statistics.median(p99[name]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
