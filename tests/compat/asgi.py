"""Drive the SDK's ASGI transports in-process: one request in, its response (or stream) out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
HANDSHAKE = "2025-06-18"


def user(principal: str, **token: Any) -> AuthenticatedUser:
    """What the front door puts in ``scope["user"]`` for a principal."""
    return AuthenticatedUser(AccessToken(token="-", client_id=principal, scopes=[], **token))


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (trio time, body chunk)
    started: trio.Event = field(default_factory=trio.Event)
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
            self.started.set()
        elif message["type"] == "http.response.body" and message.get("body"):
            self.chunks.append((trio.current_time(), message["body"]))
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, needle: bytes) -> float:
        """The trio time of the first body chunk containing ``needle`` (waits for it)."""
        while True:
            for at, chunk in self.chunks:
                if needle in chunk:
                    return at
            await self.changed.wait()


def scope_of(method: str, path: str, *, headers: dict[str, str] | None = None, query: str = "",
             principal: AuthenticatedUser | None = None) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "testserver", **(headers or {})}.items()]
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(), "headers": raw,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    if principal is not None:
        scope["user"] = principal
    return scope


def receive_of(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The request body once, then nothing until the caller is cancelled (no disconnect)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


async def call(app: App, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
               principal: AuthenticatedUser | None = None, query: str = "") -> Response:
    """A whole request and its whole response (bounded)."""
    data = b"" if body is None else json.dumps(body).encode()
    response = Response()
    with trio.fail_after(10):
        await app(scope_of(method, path, headers=headers, query=query, principal=principal), receive_of(data),
                  response.send)
    return response


def mcp_headers(session_id: str | None = None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": HANDSHAKE}
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    return headers


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
