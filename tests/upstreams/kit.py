"""Shared pieces of the upstream tests: specs for the test servers, a running host, waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

import actors
from northstar.upstreams import UpstreamHandle, UpstreamHost, UpstreamSpec

SERVERS = Path(__file__).resolve().parent / "servers"
LOWLEVEL = str(SERVERS / "lowlevel.py")
SECRET = "s3cr3t-Upstream-Token-9f8e7d6c"


def stdio_spec(name: str = "lowlevel", server: str = LOWLEVEL, **over: Any) -> UpstreamSpec:
    body: dict[str, Any] = {
        "name": name, "transport": "stdio", "command": sys.executable, "args": [server],
        "env": {"UPSTREAM_TOKEN": "{secret:token}", "PYTHONPATH": os.pathsep.join(sys.path)},
        "secrets": {"token": SECRET}, "connect_timeout_s": 20.0, "call_timeout_s": 20.0,
        "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "attempts": 5},
        "breaker": {"failure_threshold": 5, "open_s": 0.5},
    }
    body.update(over)
    return UpstreamSpec.model_validate(body)


@asynccontextmanager
async def running_host(**kw: Any) -> AsyncIterator[UpstreamHost]:
    """A host over a real supervisor (no static children), stopped at the end."""
    sup = actors.Supervisor("upstreams", [], max_restarts=5, period=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        host = UpstreamHost(lambda: sup, **kw)
        try:
            yield host
        finally:
            with trio.fail_after(60):
                await sup.stop()


async def ready(handle: UpstreamHandle, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        await handle.session.wait_until(lambda s: s.state == "ready")


def text_of(result: dict[str, Any]) -> str:
    return "".join(block.get("text", "") for block in result["content"] if block.get("type") == "text")


async def events(handle: UpstreamHandle) -> list[dict[str, Any]]:
    reply = await handle.call("events")
    return list(json.loads(text_of(reply.unwrap())))


async def pid_of(handle: UpstreamHandle) -> int:
    return int(text_of((await handle.call("pid")).unwrap()))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def gone(pid: int, timeout: float = 30) -> None:
    """Wait until process ``pid`` has exited (a pidfd turns readable), within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with trio.fail_after(timeout):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


class ServerProcess:
    """A test upstream served over HTTP in a subprocess; ``port`` is what it bound."""

    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port

    def kill(self) -> None:
        self.process.kill()


@asynccontextmanager
async def http_server(script: str, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[ServerProcess]:
    """Run ``script args...`` (it prints its port first), kill it at the end."""
    process = await trio.lowlevel.open_process([sys.executable, script, *args], stdout=subprocess.PIPE,
                                               env={**os.environ, **(env or {})})
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(60):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError(f"{script} exited before it served")
                line += chunk
        yield ServerProcess(process, int(line))
    finally:
        process.kill()
        with trio.move_on_after(10):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


def http_spec(name: str, url: str, **over: Any) -> UpstreamSpec:
    body: dict[str, Any] = {
        "name": name, "transport": "streamable_http", "url": url,
        "headers": {"Authorization": "Bearer {secret:token}", "X-Team": "platform"},
        "secrets": {"token": SECRET}, "connect_timeout_s": 20.0, "call_timeout_s": 20.0,
        "retry": {"initial_backoff_s": 0.05, "max_backoff_s": 0.5, "attempts": 5},
        "breaker": {"failure_threshold": 5, "open_s": 0.5},
    }
    body.update(over)
    return UpstreamSpec.model_validate(body)
