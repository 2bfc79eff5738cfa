"""A real MCP client against a running northstar, over every door.

This is deliberately *not* northstar's own code: it imports only the official MCP SDK
(``mcp.Client`` and its stdio / SSE / Streamable HTTP transports) and ``httpx2`` for the
REST calls, and it spawns ``python -m northstar`` as a subprocess like any client would.

It holds the one credential a fresh gateway gives out, the bootstrap admin key in
``<data dir>/admin.key`` (as an operator would after ``make run``), and with it mints an API
key for each principal an HTTP client acts as (``POST /v1/keys``); the clients then send
only ``Authorization: Bearer <their key>``.

For each transport (stdio, legacy SSE, Streamable HTTP with the 2025-11-25 session
handshake, Streamable HTTP in the stateless 2026-07-28 era) it checks, in order:

1. handshake      the session opens and the expected protocol version is negotiated
2. list-tools     echo and every media_v2 operation, names fit ``^[a-zA-Z0-9_-]{1,64}$``
3. echo           ``echo__ping`` succeeds
4. denied         ``media_v2__create_asset`` without the firearm -> ``firearm_required``
5. grant          REST (admin) for HTTP doors; the ``northstar firearms grant`` CLI for stdio
6. allowed        the same call succeeds (stdio: in a freshly spawned server process)
7. read-back      ``media_v2__get_asset`` returns what was written

Each step prints one line, ``PASS <transport>/<step>``, ``FAIL <transport>/<step>: reason``
or ``SKIP <transport>/<step>: reason`` (steps after a failure are skipped). The exit code
is 1 when any step failed. Usage::

    python driver.py --url http://127.0.0.1:PORT --data-dir DIR [--python PY] [--only KIND ...]
    python driver.py --url http://127.0.0.1:PORT --data-dir DIR --mint TENANT USER   (prints a new key)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MEDIA_OPS = ("media_v2__create_asset", "media_v2__get_asset", "media_v2__list_assets", "media_v2__delete_asset")
FIREARM = "firearm.media.write"
SCOPE = "media.write"
KINDS = ("stdio", "sse", "http-2025", "http-2026")
EXPECTED_VERSION = {"stdio": "2025-11-25", "sse": "2025-11-25", "http-2025": "2025-11-25", "http-2026": "2026-07-28"}
REQUEST_TIMEOUT_S = 20.0  # one MCP request
TRANSPORT_TIMEOUT_S = 60.0  # every step of one transport together
ASSET = {"name": "hello.txt", "mime_type": "text/plain", "content_text": "hello from a real client", "tags": ["rc"]}


class StepFailed(Exception):
    """A check did not hold; the message says what was seen."""



def error_envelope(result: Any) -> dict[str, Any]:
    """The error a client (and the model) reads from an isError result: JSON text content."""
    for item in result.content:
        if getattr(item, "type", None) == "text":
            try:
                return dict(json.loads(item.text).get("error") or {})
            except (ValueError, AttributeError):
                return {}
    return {}

def check(cond: object, message: str) -> None:
    if not cond:
        raise StepFailed(message)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failed: int = 0

    def emit(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def passed(self, step: str) -> None:
        self.emit(f"PASS {step}")

    def fail(self, step: str, reason: str) -> None:
        self.failed += 1
        self.emit(f"FAIL {step}: {one_line(reason)}")

    def skip(self, step: str, reason: str) -> None:
        self.emit(f"SKIP {step}: {one_line(reason)}")


def one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """The innermost meaningful message of an exception (groups included)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, StepFailed) else str(exc)


@dataclass
class Target:
    url: str
    data_dir: str
    python: str

    @property
    def admin(self) -> dict[str, str]:
        """The bootstrap admin key the gateway wrote on its first start."""
        with open(os.path.join(self.data_dir, "admin.key"), encoding="ascii") as f:
            return {"Authorization": f"Bearer {f.read().strip()}"}

    def mint(self, tenant: str, user: str) -> str:
        """A new API key for tenant/user, minted over REST with the admin key."""
        resp = httpx2.post(f"{self.url}/v1/keys", headers=self.admin, json={"tenant": tenant, "user": user},
                           timeout=REQUEST_TIMEOUT_S)
        check(resp.status_code == 201, f"POST /v1/keys answered {resp.status_code}: {resp.text[:300]}")
        return str(resp.json()["key"])

    def identity(self, tenant: str, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint(tenant, user)}"}

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
        env.update({"NORTHSTAR_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
        return env

    @contextlib.asynccontextmanager
    async def client(self, kind: str, tenant: str, user: str) -> AsyncIterator[Client]:
        """An initialised SDK client over ``kind``, identified as tenant/user (by its own key over HTTP)."""
        headers = {} if kind == "stdio" else self.identity(tenant, user)
        common: dict[str, Any] = {"cache": None, "read_timeout_seconds": REQUEST_TIMEOUT_S}
        if kind == "stdio":
            params = StdioServerParameters(
                command=self.python,
                args=["-m", "northstar", "stdio", "--tenant", tenant, "--user", user, "--data-dir", self.data_dir],
                env=self.server_env(),
            )
            async with Client(params, mode="legacy", **common) as client:
                yield client
        elif kind == "sse":
            transport = sse_client(f"{self.url}/sse", headers=headers, timeout=REQUEST_TIMEOUT_S)
            async with Client(transport, mode="legacy", **common) as client:
                yield client
        else:
            mode = "legacy" if kind == "http-2025" else "auto"
            async with httpx2.AsyncClient(headers=headers, timeout=REQUEST_TIMEOUT_S) as http, Client(
                streamable_http_client(f"{self.url}/mcp", http_client=http), mode=mode, **common
            ) as client:
                yield client

    def grant(self, kind: str, tenant: str, user: str) -> str:
        """Grant the firearm: REST as an admin for HTTP doors, the CLI for stdio."""
        if kind == "stdio":
            cmd = [self.python, "-m", "northstar", "firearms", "grant", tenant, user, FIREARM,
                   "--data-dir", self.data_dir, "--reason", "real-client script"]
            done = subprocess.run(cmd, env=self.server_env(), capture_output=True, text=True, timeout=60, check=False)
            check(done.returncode == 0, f"northstar firearms grant exited {done.returncode}: {done.stderr[-300:]}")
            return "granted with the CLI"
        resp = httpx2.post(f"{self.url}/v1/firearms/grants", headers=self.admin,
                           json={"tenant": tenant, "user": user, "firearm": FIREARM, "reason": "real-client script"},
                           timeout=REQUEST_TIMEOUT_S)
        check(resp.status_code == 201, f"POST /v1/firearms/grants answered {resp.status_code}: {resp.text[:300]}")
        return "granted over REST"


# -- the checks on one client ------------------------------------------------------------------
def expect_handshake(client: Client, kind: str) -> None:
    version = client.protocol_version
    check(version == EXPECTED_VERSION[kind], f"negotiated {version!r}, expected {EXPECTED_VERSION[kind]!r}")
    info = client.server_info
    if kind != "http-2026":  # 2026-era servers may stay anonymous; handshake-era ones must not
        check(info is not None and info.name == "northstar", f"server_info is {info!r}")


async def expect_tools(client: Client) -> None:
    tools = (await client.list_tools()).tools
    names = [t.name for t in tools]
    missing = [n for n in ("echo__ping", *MEDIA_OPS) if n not in names]
    check(not missing, f"missing tools {missing}; got {names}")
    bad = [n for n in names if not WIRE_NAME.fullmatch(n)]
    check(not bad, f"names a real client rejects: {bad}")


async def expect_echo(client: Client) -> None:
    result = await client.call_tool("echo__ping", {"message": "hi"})
    check(not result.is_error, f"echo__ping returned an error: {result.structured_content}")
    out = result.structured_content or {}
    check(out.get("pong") is True and out.get("message") == "hi", f"unexpected echo result {out}")


async def expect_denied(client: Client) -> None:
    result = await client.call_tool("media_v2__create_asset", ASSET)
    check(result.is_error, f"create_asset without the firearm succeeded: {result.structured_content}")
    err = error_envelope(result)
    check(err.get("code") == "firearm_required", f"expected firearm_required, got {err}")
    details = err.get("details", {})
    check(details == {"scope": SCOPE, "firearm": FIREARM}, f"unexpected denial details {details}")


async def expect_allowed(client: Client) -> str:
    result = await client.call_tool("media_v2__create_asset", ASSET)
    check(not result.is_error, f"create_asset after the grant failed: {result.structured_content}")
    asset_id = (result.structured_content or {}).get("asset_id")
    check(isinstance(asset_id, str) and asset_id, f"no asset_id in {result.structured_content}")
    return str(asset_id)


async def expect_read_back(client: Client, asset_id: str) -> None:
    got = await client.call_tool("media_v2__get_asset", {"asset_id": asset_id})
    check(not got.is_error, f"get_asset failed: {got.structured_content}")
    out = got.structured_content or {}
    check(out.get("content_text") == ASSET["content_text"], f"read back {out.get('content_text')!r}")
    check(out.get("mime_type") == ASSET["mime_type"], f"read back mime_type {out.get('mime_type')!r}")


# -- one transport, step by step -----------------------------------------------------------------
class Steps:
    """Runs the named steps of one transport, in order; after a failure the rest are skipped."""

    def __init__(self, kind: str, report: Report) -> None:
        self.kind = kind
        self.report = report
        self.broken: str | None = None
        self.reported: set[str] = set()

    async def run(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        self.reported.add(name)
        step = f"{self.kind}/{name}"
        if self.broken is not None:
            self.report.skip(step, f"not reached: {self.broken} failed")
            return None
        try:
            result = await fn()
        except Exception as exc:
            self.broken = step
            self.report.fail(step, describe(exc))
            return None
        self.report.passed(step)
        return result

    def interrupted(self, exc: BaseException) -> None:
        """The transport failed outside a step (connect, handshake, timeout, close)."""
        pending = [n for n in STEP_NAMES if n not in self.reported]
        if not pending:
            self.report.fail(f"{self.kind}/close", describe(exc))
            return
        self.reported.add(pending[0])
        self.report.fail(f"{self.kind}/{pending[0]}", describe(exc))
        self.broken = self.broken or f"{self.kind}/{pending[0]}"
        self.finish()

    def finish(self) -> None:
        for name in STEP_NAMES:
            if name not in self.reported:
                self.reported.add(name)
                self.report.skip(f"{self.kind}/{name}", f"not reached: {self.broken} failed")


STEP_NAMES = ("handshake", "list-tools", "echo", "denied", "grant", "allowed", "read-back")


async def run_transport(target: Target, kind: str, report: Report) -> None:
    tenant, user = f"rc-{kind}-{uuid.uuid4().hex[:8]}", "alice"
    steps = Steps(kind, report)

    async def first_session() -> None:
        async with target.client(kind, tenant, user) as client:
            await steps.run("handshake", lambda: as_async(expect_handshake, client, kind))
            await steps.run("list-tools", lambda: expect_tools(client))
            await steps.run("echo", lambda: expect_echo(client))
            await steps.run("denied", lambda: expect_denied(client))
            if kind != "stdio":  # HTTP doors: the grant applies to the open session at once
                await steps.run("grant", lambda: anyio.to_thread.run_sync(target.grant, kind, tenant, user))
                await after_grant(client)

    async def after_grant(client: Client) -> None:
        asset_id = await steps.run("allowed", lambda: expect_allowed(client))
        await steps.run("read-back", lambda: expect_read_back(client, asset_id or ""))

    async def second_stdio_session() -> None:  # a new server process sees the CLI's grant
        await steps.run("grant", lambda: anyio.to_thread.run_sync(target.grant, kind, tenant, user))
        if steps.broken is None:
            async with target.client(kind, tenant, user) as client:
                await after_grant(client)

    try:
        with anyio.fail_after(TRANSPORT_TIMEOUT_S):
            await first_session()
            if kind == "stdio":
                await second_stdio_session()
    except Exception as exc:
        steps.interrupted(exc)
    steps.finish()


async def as_async(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def main_async(args: argparse.Namespace) -> int:
    target = Target(url=args.url.rstrip("/"), data_dir=args.data_dir, python=args.python)
    if args.mint:
        print(target.mint(*args.mint), flush=True)
        return 0
    report = Report()
    for kind in args.only or KINDS:
        await run_transport(target, kind, report)
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="base URL of the running gateway, e.g. http://127.0.0.1:8000")
    ap.add_argument("--data-dir", required=True, help="the gateway's data directory (for stdio and the CLI grant)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter that has northstar installed")
    ap.add_argument("--only", nargs="*", choices=KINDS, help="run only these transports")
    ap.add_argument("--mint", nargs=2, metavar=("TENANT", "USER"), help="only print a new API key for TENANT USER")
    return anyio.run(main_async, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
