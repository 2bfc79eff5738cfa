"""Memory per idle Streamable HTTP session: RSS with 0 sessions vs after opening N and leaving them idle.

The server first serves one whole session (initialize, initialized, a call, DELETE) so lazily
imported code is not charged to the sessions; then RSS (``VmRSS``) is read, N sessions are
opened (``initialize`` + ``notifications/initialized``, 8 at a time) and left idle, and RSS is
read again after a settle pause. Gateway sessions are spread over principals (``X-User-Id``) to
stay under its per-principal session limit, as real clients would be.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx2
import trio

from bench import procs, protocol

SETTLE_S = 2.0
PARALLEL = 8
SESSIONS_PER_PRINCIPAL = 50


def principal_headers(kind: str, i: int) -> dict[str, str]:
    return {"X-User-Id": f"bench-{i // SESSIONS_PER_PRINCIPAL}"} if kind == "gateway" else {}


async def open_one(client: httpx2.AsyncClient, base_url: str, extra: dict[str, str]) -> str:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": protocol.HANDSHAKE, "capabilities": {},
                       "clientInfo": protocol.CLIENT_INFO}}
    headers = {"Content-Type": "application/json", "Accept": protocol.ACCEPT, **extra}
    response = await client.post(f"{base_url}/mcp", content=protocol.compact(init), headers=headers)
    protocol.reply_to(response, 0)
    session_id = response.headers.get("mcp-session-id")
    if not session_id:
        raise protocol.CheckFailed(f"initialize opened no session\n{protocol.describe(response)}")
    headers |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": protocol.HANDSHAKE}
    note = protocol.compact({"jsonrpc": "2.0", "method": "notifications/initialized"})
    acked = await client.post(f"{base_url}/mcp", content=note, headers=headers)
    if acked.status_code != 202:
        raise protocol.CheckFailed(f"initialized not accepted\n{protocol.describe(acked)}")
    return session_id


async def open_sessions(kind: str, base_url: str, count: int) -> set[str]:
    ids: set[str] = set()
    limiter = trio.CapacityLimiter(PARALLEL)

    async def one(i: int) -> None:
        async with limiter:
            ids.add(await open_one(client, base_url, principal_headers(kind, i)))

    limits = httpx2.Limits(max_connections=PARALLEL)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client, trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return ids


def warm_up(client: httpx2.Client, kind: str, base_url: str) -> None:
    """One whole session, then DELETE it, so the server is back at zero sessions."""
    extra = principal_headers(kind, 10**9)
    session_id = protocol.open_session(client, base_url, extra)
    request = protocol.session_request(session_id)
    response = client.post(f"{base_url}/mcp", content=request.body(1), headers={**request.headers, **extra})
    protocol.check_call(response, 1)
    client.delete(f"{base_url}/mcp", headers={"Mcp-Session-Id": session_id,
                                              "MCP-Protocol-Version": protocol.HANDSHAKE, **extra})


def measure_server(server: procs.Server, kind: str, sessions: int) -> dict[str, Any]:
    with procs.running(server), httpx2.Client(timeout=30) as client:
        warm_up(client, kind, server.url)
        time.sleep(SETTLE_S)
        rss0 = server.rss_kib()
        started = time.perf_counter()
        ids = trio.run(open_sessions, kind, server.url, sessions)
        open_s = time.perf_counter() - started
        time.sleep(SETTLE_S)
        rss1 = server.rss_kib()
        if len(ids) != sessions:
            raise protocol.CheckFailed(f"{kind}: opened {len(ids)} distinct sessions, wanted {sessions}")
    return {"sessions": sessions, "rss0_kib": rss0, "rss_kib": rss1, "open_seconds": round(open_s, 2),
            "kib_per_session": (rss1 - rss0) / sessions}


def idle_sessions(workdir: Path, sessions: int, log: Any = print) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Sessions spread over principals by header: the explicit headers mode (memory, not auth, is measured).
    gateway = procs.gateway(workdir, name="gateway-mem", env={"NORTHSTAR_AUTH_MODE": "headers"})
    for kind, server in (("gateway", gateway),
                         ("baseline", procs.baseline(workdir))):
        out[kind] = measure_server(server, kind, sessions)
        log(f"  {kind}: {out[kind]['kib_per_session']:.1f} KiB/session "
            f"(RSS {out[kind]['rss0_kib']} -> {out[kind]['rss_kib']} KiB, {sessions} sessions)")
    return out
