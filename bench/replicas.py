"""``python -m bench.replicas`` (``make bench-replicas``): 1, 2 and 3 replicas behind a load
balancer, and the cost of limits shared on Redis (same-run A/B).

    python -m bench.replicas                  # 3 rounds, 5 s runs
    python -m bench.replicas --rounds 1 --duration 3

Needs PostgreSQL (``NORTHSTAR_TEST_PG_URL`` or postgresql://postgres@127.0.0.1:5432/test) and
Redis on 127.0.0.1:6379. Starts three replicas on one fresh schema with ``limits_backend =
redis`` and a fourth with ``local`` limits on the same schema. The load balancer is HAProxy
when it is installed, else :mod:`bench.lb` (round robin per connection, in Python). The load
is wrk calling ``POST /v1/tools/echo.ping/call`` (the gate chain, the shared limits, the tool,
an audit record committed on PostgreSQL) as one principal, whose limits are set high enough
never to refuse: the limiter runs on every call without tripping.

* scaling: the same wrk run through the balancer to the first 1, 2 and 3 replicas;
* A/B: the ``local`` replica and a ``redis`` replica called directly, alternately, in the same
  run: the difference is what the shared limits cost a replica.

Writes bench/results/replicas.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import procs, wrk

PG_URL = os.environ.get("NORTHSTAR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
HEADERS = {"Content-Type": "application/json"}


def call_script(key: str) -> wrk.Script:
    """The governed call wrk makes, as one caller with an API key (the default identity mode)."""
    return wrk.Script("POST", {**HEADERS, "Authorization": f"Bearer {key}"}, "/v1/tools/echo.ping/call",
                      '{"arguments":{"message":"m', '"}}', body_pattern='"audit_seq"')


def mint_key(env: dict[str, str], data_dir: Path) -> str:
    """An API key on the replicas' shared store, minted by the CLI as an operator does."""
    cmd = [procs.PY, "-m", "northstar", "keys", "create", "--tenant", "bench", "--user", "replicas",
           "--data-dir", str(data_dir)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env={**base, **env})
    if done.returncode != 0:
        raise SystemExit(f"northstar keys create failed ({done.returncode}):\n{done.stderr[-2000:]}")
    key: str = json.loads(done.stdout)["key"]
    return key
RESULTS = Path(__file__).parent / "results" / "replicas.json"


def replica(workdir: Path, name: str, env: dict[str, str]) -> procs.Server:
    port = procs.free_port()
    cmd = [procs.PY, "-m", "northstar", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(workdir / name)]
    return procs.Server(name, cmd, port=port, workdir=workdir, env={**procs.GATEWAY_ENV, **env}, core=None)


def balancer(workdir: Path, backends: list[procs.Server]) -> tuple[procs.Server, str]:
    port = procs.free_port()
    haproxy = shutil.which("haproxy")
    if haproxy:
        cfg = workdir / f"haproxy-{len(backends)}.cfg"
        servers = "\n".join(f"    server r{i} 127.0.0.1:{b.port}" for i, b in enumerate(backends))
        cfg.write_text(f"defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n"
                       f"    timeout server 60s\nfrontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n"
                       f"backend b\n    balance roundrobin\n{servers}\n")
        return procs.Server("haproxy", [haproxy, "-f", str(cfg)], port=port, workdir=workdir, core=None), "haproxy"
    cmd = [procs.PY, "-m", "bench.lb", "--port", str(port), *(f"--backend=127.0.0.1:{b.port}" for b in backends)]
    return procs.Server(f"lb-{len(backends)}", cmd, port=port, workdir=workdir, core=None), "bench.lb (Python)"


def measure(url: str, script: Path, args: argparse.Namespace) -> wrk.WrkResult:
    wrk.run(url, script, connections=args.connections, duration_s=1.0)  # warm-up
    return wrk.run(url, script, connections=args.connections, duration_s=args.duration)


def run(args: argparse.Namespace) -> dict[str, Any]:
    schema, prefix = f"bench_{uuid.uuid4().hex[:12]}", f"nsbench-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"cores": procs.cores(), "connections": args.connections, "duration_s": args.duration,
                           "rounds": args.rounds, "scaling": {}, "ab": {"local": [], "redis": []}}
    with procs.workdir("northstar-replicas-") as work, ExitStack() as stack:
        shared = work / "shared"
        shared.mkdir()
        env = {"NORTHSTAR_STORE_URL": f"{PG_URL}?schema={schema}", "NORTHSTAR_AUDIT_KEY_FILE": str(shared / "a.key"),
               "NORTHSTAR_SECRETS_KEY_FILE": str(shared / "s.key"), "NORTHSTAR_LIMITS_BACKEND": "redis",
               "NORTHSTAR_LIMITS_PREFIX": prefix, "NORTHSTAR_LOG_LEVEL": "WARNING"}
        stack.callback(drop_schema, schema)
        first = replica(work, "r0", env)
        stack.enter_context(procs.running(first))
        others = [replica(work, f"r{i}", env) for i in (1, 2)]
        local = replica(work, "local", {**env, "NORTHSTAR_LIMITS_BACKEND": "local"})
        stack.enter_context(procs.running(*others, local))
        replicas = [first, *others]
        script = call_script(mint_key(env, work / "r0")).write(work / "call.lua")
        for rnd in range(args.rounds):
            for n in (1, 2, 3):
                lb, kind = balancer(work, replicas[:n])
                out["balancer"] = kind
                with procs.running(lb):
                    result = measure(lb.url, script, args)
                out["scaling"].setdefault(str(n), []).append(result.__dict__)
                print(f"round {rnd + 1}: {n} replica(s) via {kind}: {result.rps:.0f} calls/s, "
                      f"p50 {result.p50_ms} ms, p99 {result.p99_ms} ms {result.problems or ''}", flush=True)
            for name, server in (("local", local), ("redis", first)) if rnd % 2 == 0 else \
                    (("redis", first), ("local", local)):
                result = measure(server.url, script, args)
                out["ab"][name].append(result.__dict__)
                print(f"round {rnd + 1}: one replica direct, limits {name}: {result.rps:.0f} calls/s, "
                      f"p50 {result.p50_ms} ms, p99 {result.p99_ms} ms {result.problems or ''}", flush=True)
    out["summary"] = summarize(out)
    return out


def engine_cost(calls: int = 500) -> dict[str, float]:
    """What the shared limits add to one call, measured alone: admit + give back (two Redis
    round trips through a worker thread), sequentially, in microseconds per call."""
    import trio

    from northstar.policy.shared_limits import RedisLimits, Slot

    async def run() -> dict[str, float]:
        prefix = f"nsbench-{uuid.uuid4().hex[:8]}"
        limits = RedisLimits.connect("redis://127.0.0.1:6379/0", fail="closed", prefix=prefix, lease_s=60.0)
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            slot = await limits.admit("bench/engine", rate=1e9, burst=10**9, max_in_flight=10**6)
            assert isinstance(slot, Slot)
            await limits.give_back(slot)
            samples.append((time.perf_counter() - t0) * 1e6)
        await limits.aclose()
        samples.sort()
        return {"p50_us": round(samples[len(samples) // 2], 1), "p99_us": round(samples[int(len(samples) * 0.99)], 1)}

    return trio.run(run)


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"scaling": {}, "ab": {}}
    for n, runs in out["scaling"].items():
        summary["scaling"][n] = {k: median_of(runs, k) for k in ("rps", "p50_ms", "p99_ms")}
    for name, runs in out["ab"].items():
        summary["ab"][name] = {k: median_of(runs, k) for k in ("rps", "p50_ms", "p99_ms")}
    return summary


def drop_schema(schema: str) -> None:
    subprocess.run(["psql", PG_URL, "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"], capture_output=True,
                   check=False, timeout=60)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args(argv)
    if procs.ensure_wrk() is None:
        raise SystemExit("bench.replicas needs wrk")
    started = time.time()
    out = run(args)
    out["engine_cost"] = engine_cost()
    print(f"shared limits, admit + give back alone: {out['engine_cost']}", flush=True)
    out["wall_s"] = round(time.time() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["summary"], indent=2))


if __name__ == "__main__":
    main()
