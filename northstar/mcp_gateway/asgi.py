"""The front door: one small ASGI router in front of every HTTP surface.

For every HTTP request it (1) checks Host and Origin (DNS-rebinding protection), (2)
enforces the body size limit and a read deadline, (3) authenticates the caller into a
:class:`RequestContext` and (4) routes:

* ``/mcp``            -> the SDK's Streamable HTTP session manager (both protocol eras)
* ``/sse``            -> the SDK's legacy HTTP+SSE transport (GET opens the stream)
* ``/messages/``      -> its message endpoint (POST)
* anything else       -> the Quart-Trio app (REST API, health, metrics)

Errors found here are answered in the surface's own language: a JSON-RPC error object
(with the envelope fields in ``error.data``) on the MCP paths, the canonical envelope on
REST. The identity is put in the ASGI scope under ``northstar.ctx`` and, for session
binding, as ``scope["user"]``: a session opened by one principal answers 404 to any other.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from northstar.common import errors as E
from northstar.common.error_envelope import INVALID_REQUEST, envelope, error_headers, jsonrpc_code
from northstar.common.identity import REQUEST_ID_HEADER, Transport, new_request_id
from northstar.mcp_gateway.mcp_server import SCOPE_KEY

log = logging.getLogger("northstar.http")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

MCP_PATHS = ("/mcp", "/mcp/")
STATELESS_PATH = "/mcp/stateless"
BODY_KEY = "northstar.body"
SSE_PATH = "/sse"
MESSAGES_PREFIX = "/messages"


class HostOriginPolicy:
    """Allowed Host and Origin values; ``host:*`` patterns match any port."""

    def __init__(self, hosts: list[str], origins: list[str]) -> None:
        self.hosts = hosts
        self.origins = origins

    @classmethod
    def for_bind(cls, host: str, extra_hosts: list[str], extra_origins: list[str]) -> HostOriginPolicy:
        loop_hosts = ["127.0.0.1", "localhost", "[::1]"]
        hosts = [*extra_hosts]
        origins = [*extra_origins]
        if host in ("127.0.0.1", "localhost", "::1") or not extra_hosts:
            hosts += [*loop_hosts, *(f"{h}:*" for h in loop_hosts)]
            origins += [f"{s}://{h}:*" for s in ("http", "https") for h in loop_hosts]
            origins += [f"{s}://{h}" for s in ("http", "https") for h in loop_hosts]
        if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
            hosts += [host, f"{host}:*"]
        return cls(hosts, origins)

    @staticmethod
    def _match(value: str, allowed: list[str]) -> bool:
        if "*" in allowed or value in allowed:
            return True
        return any(a.endswith(":*") and value.startswith(a[:-1]) for a in allowed)

    def host_ok(self, host: str | None) -> bool:
        return bool(host) and self._match(host.lower(), self.hosts)  # type: ignore[union-attr]

    def origin_ok(self, origin: str | None) -> bool:
        return origin is None or self._match(origin.lower(), self.origins)


def header(scope: Scope, name: bytes) -> str | None:
    found = [v for k, v in scope["headers"] if k == name]
    return found[0].decode("latin-1") if found else None


def decoded_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, err: E.NorthstarError, request_id: str, *, jsonrpc: bool,
                     status: int | None = None) -> None:
    status = status or err.http_status
    headers = error_headers(err, request_id)
    if jsonrpc:
        fields = envelope(err, request_id)["error"]
        fields["http_status"] = status
        code = jsonrpc_code(err) if isinstance(err, E.BadRequest) else INVALID_REQUEST
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": err.message, "data": fields}}
    else:
        body = envelope(err, request_id)
        body["error"]["http_status"] = status  # type: ignore[index]
    await send_json(send, status, body, headers)


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """Read the whole body (up to ``limit`` bytes); returns (body, disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class FrontDoor:
    def __init__(
        self,
        *,
        rest_app: ASGIApp,
        streamable: ASGIApp,
        stateless: ASGIApp,
        sse_connect: ASGIApp,
        sse_post: ASGIApp,
        authenticator: Any,
        policy: HostOriginPolicy,
        max_body_bytes: int,
        read_timeout_s: float,
    ) -> None:
        self.rest_app = rest_app
        self.streamable = streamable
        self.stateless = stateless
        self.fastpath: Any = None
        self.sse_connect = sse_connect
        self.sse_post = sse_post
        self.authenticator = authenticator
        self.policy = policy
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s

    def route(self, path: str) -> tuple[ASGIApp, Transport | None]:
        if path in MCP_PATHS:
            return self.streamable, Transport.STREAMABLE_HTTP
        if path == STATELESS_PATH:
            return self.stateless, Transport.STREAMABLE_HTTP
        if path == SSE_PATH:
            return self.sse_connect, Transport.SSE
        if path == MESSAGES_PREFIX or path.startswith(MESSAGES_PREFIX + "/"):
            return self.sse_post, Transport.SSE
        return self.rest_app, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.rest_app(scope, receive, send)
            return
        app, transport = self.route(scope["path"])
        is_mcp = transport is not None
        request_id = self.request_id_of(scope)
        try:
            self.check_host_origin(scope)
            receive = await self.buffer_body(scope, receive)
            if is_mcp:
                assert transport is not None
                await self.authenticate(scope, transport)
        except E.NorthstarError as err:
            await send_error(send, err, request_id, jsonrpc=is_mcp, status=self.status_for(err))
            return
        if transport is Transport.STREAMABLE_HTTP and self.fastpath is not None and BODY_KEY in scope:
            if await self.fastpath.try_handle(scope, scope.pop(BODY_KEY), receive, send):
                return
        await app(scope, receive, send)

    @staticmethod
    def status_for(err: E.NorthstarError) -> int:
        return 421 if isinstance(err, MisdirectedRequest) else err.http_status

    @staticmethod
    def request_id_of(scope: Scope) -> str:
        rid = header(scope, REQUEST_ID_HEADER.encode())
        if rid and 0 < len(rid) <= 128 and rid.isascii() and rid.isprintable():
            return rid
        return new_request_id()

    def check_host_origin(self, scope: Scope) -> None:
        if not self.policy.host_ok(header(scope, b"host")):
            raise MisdirectedRequest("Invalid Host header")
        if not self.policy.origin_ok(header(scope, b"origin")):
            raise E.Forbidden("Invalid Origin header", reason="origin")

    async def buffer_body(self, scope: Scope, receive: Receive) -> Receive:
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return receive
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise E.PayloadTooLarge(limit=self.max_body_bytes)
        try:
            with trio.fail_after(self.read_timeout_s):
                body, _ = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            raise E.PayloadTooLarge(limit=self.max_body_bytes) from None
        except trio.TooSlowError:
            raise E.RequestTimeout(timeout_s=self.read_timeout_s) from None
        scope[BODY_KEY] = body
        return replay(body, receive)

    async def authenticate(self, scope: Scope, transport: Transport) -> None:
        ctx = await self.authenticator.authenticate(decoded_headers(scope), transport)
        scope[SCOPE_KEY] = ctx
        token = AccessToken(token="-", client_id=ctx.principal, scopes=[])
        scope["user"] = AuthenticatedUser(token)


class MisdirectedRequest(E.BadRequest):
    code = "misdirected_request"
    default_message = "Invalid Host header"
