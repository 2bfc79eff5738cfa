"""The front door: one small ASGI router in front of every HTTP surface.

For every HTTP request it (1) checks Host and Origin (DNS-rebinding protection), (2)
authenticates the caller into a :class:`RequestContext` (MCP paths; REST does it in Quart),
(3) on the MCP paths checks method, media types and ``MCP-Protocol-Version`` (405/415/406/400),
(4) enforces the body size limit and a read deadline (413/408), (5) checks the body: an MCP
body must be one JSON-RPC message in strict JSON within the shape limits, a JSON REST body
strict JSON (400), (6) counts SSE streams and new sessions against the caps (429/503), and
(7) routes:

* ``/mcp``            -> the SDK's Streamable HTTP session manager (both protocol eras)
* ``/sse``            -> the SDK's legacy HTTP+SSE transport (GET opens the stream)
* ``/messages/``      -> its message endpoint (POST)
* anything else       -> the Quart-Trio app (REST API, health, metrics)

Errors found here are answered in the surface's own language: a JSON-RPC error object
(with the envelope fields in ``error.data``) on the MCP paths, the canonical envelope on
REST; the SDK transports' own error answers are rewritten the same way (:class:`McpAnswers`).
The identity is put in the ASGI scope under ``northstar.ctx`` and, for session binding, as
``scope["user"]``: a session opened by one principal answers 404 to any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from northstar.common import errors as E
from northstar.common.errors import InvalidRequest, MisdirectedRequest, NotAcceptable, UnsupportedProtocolVersion
from northstar.common.identity import REQUEST_ID_HEADER, Transport, new_request_id
from northstar.mcp_gateway.protocol.jsonrpc import check_mcp_body, check_rest_json
from northstar.mcp_gateway.protocol.mcp_http import (
    MCP_METHODS,
    SUPPORTED_PROTOCOL_VERSIONS,
    accepts_json_and_sse,
    media_type,
)
from northstar.mcp_gateway.protocol.strict_json import MAX_JSON_DEPTH, MAX_JSON_ITEMS
from northstar.mcp_gateway.transports.http.answers import McpAnswers, send_error
from northstar.mcp_gateway.transports.http.asgi import (
    SCOPE_KEY,
    ASGIApp,
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    all_headers,
    decoded_headers,
    header,
    read_body,
    replay,
)
from northstar.mcp_gateway.transports.http.capacity import CapacityLimits, SessionTicket
from northstar.mcp_gateway.transports.http.host_origin import HostOriginPolicy
from northstar.policy.shared_limits import NO_SLOT, SharedLimits, Slot

log = logging.getLogger("northstar.http")

MCP_PATHS = ("/mcp", "/mcp/")
STATELESS_PATH = "/mcp/stateless"
BODY_KEY = "northstar.body"
MESSAGE_KEY = "northstar.message"  # the checked JSON-RPC message of an MCP POST
SSE_PATH = "/sse"
MESSAGES_PREFIX = "/messages"


PARSE_IN_THREAD_BYTES = 64 * 1024  # bigger bodies are parsed off the event loop


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
        capacity: CapacityLimits | None = None,
        max_json_depth: int = MAX_JSON_DEPTH,
        max_json_items: int = MAX_JSON_ITEMS,
        shared: SharedLimits | None = None,
        session_lease_s: float = 60.0,
    ) -> None:
        self.rest_app = rest_app
        self.shared = shared or SharedLimits()
        self.session_lease_s = session_lease_s
        self.streamable = streamable
        self.stateless = stateless
        self.fastpath: Any = None
        self.sse_connect = sse_connect
        self.sse_post = sse_post
        self.authenticator = authenticator
        self.policy = policy
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        self.max_json_depth = max_json_depth
        self.max_json_items = max_json_items
        self._users: dict[str, AuthenticatedUser] = {}
        self.capacity = capacity or CapacityLimits(
            max_sse_streams=1_000, max_sse_streams_per_principal=20, max_sessions_per_principal=100,
            live_sessions=None,
        )

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
        release: Callable[[], None] | None = None
        ticket: SessionTicket | None = None
        try:
            self.check_host_origin(scope)
            if is_mcp:
                assert transport is not None
                await self.authenticate(scope, transport)
                request_id = scope[SCOPE_KEY].request_id
                self.check_mcp_request(scope)
            replayed = await self.buffer_body(scope, receive)
            await self.check_body(scope, is_mcp)
            fast = transport is Transport.STREAMABLE_HTTP and self.fastpath is not None and MESSAGE_KEY in scope
            if fast and await self.fastpath.try_handle(scope, receive, send):
                return  # answered whole by the fast path, in the final wire form
            if is_mcp:
                slot = await self.shared_session_slot(scope)
                try:
                    send, release, ticket = self.admit(scope, send, request_id, slot)
                except E.NorthstarError:
                    await self.shared.give_back(slot)
                    raise
        except E.NorthstarError as err:
            await send_error(send, err, request_id, jsonrpc=is_mcp, status=self.status_for(err),
                             close=BODY_KEY not in scope and self.has_body(scope))
            return
        try:
            scope.pop(BODY_KEY, None)
            await app(scope, replayed, send)
        finally:
            if release is not None:
                release()
            if ticket is not None and ticket.session_id is None:  # no session came of it
                await self.shared.give_back(ticket.slot)

    async def shared_session_slot(self, scope: Scope) -> Slot:
        """A new handshake-era session's place among its principal's sessions on every replica
        (the shared limits engine), or the refusal (429; 503 when failing closed)."""
        if self.shared.backend == "local" or not self.opens_session(scope):
            return NO_SLOT
        principal = scope[SCOPE_KEY].principal
        taken = await self.shared.take(f"sessions:{principal}", self.capacity.max_sessions_per_principal,
                                       lease_s=self.session_lease_s)
        if isinstance(taken, E.RateLimited):
            limit = self.capacity.max_sessions_per_principal
            raise E.RateLimited("too many open sessions for this principal: end one (DELETE) or let it expire",
                                retry_after=CapacityLimits.RETRY_AFTER_S, limit=limit)
        if isinstance(taken, E.NorthstarError):
            raise taken
        return taken

    @staticmethod
    def opens_session(scope: Scope) -> bool:
        version = header(scope, b"mcp-protocol-version")
        return (scope["method"] == "POST" and scope["path"] in MCP_PATHS and header(scope, b"mcp-session-id") is None
                and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS))

    @staticmethod
    def has_body(scope: Scope) -> bool:
        """Whether the request declares a body (which an early answer leaves unread)."""
        length = header(scope, b"content-length")
        return header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() != "0")

    def check_mcp_request(self, scope: Scope) -> None:
        """Method, media types and protocol version of a request to an MCP path (405/415/406/400)."""
        method, path = scope["method"], scope["path"]
        if path == SSE_PATH:
            if method != "GET":
                raise E.MethodNotAllowed("the SSE stream is opened with GET", allow="GET")
        elif path == MESSAGES_PREFIX or path.startswith(MESSAGES_PREFIX + "/"):
            if method != "POST":
                raise E.MethodNotAllowed("messages are sent with POST", allow="POST")
        elif method not in MCP_METHODS:
            raise E.MethodNotAllowed(f"{method} is not allowed on {path}", allow=", ".join(MCP_METHODS))
        versions = all_headers(scope, b"mcp-protocol-version")
        if len(versions) > 1:
            raise InvalidRequest("mcp-protocol-version was sent more than once", header="mcp-protocol-version")
        if versions and versions[0] not in SUPPORTED_PROTOCOL_VERSIONS:
            raise UnsupportedProtocolVersion(
                f"Unsupported protocol version {versions[0][:64]!r}; supported: "
                + ", ".join(SUPPORTED_PROTOCOL_VERSIONS),
                requested=versions[0][:64], supported=list(SUPPORTED_PROTOCOL_VERSIONS),
            )
        if method != "POST":
            return
        if media_type(header(scope, b"content-type")) != "application/json":
            raise E.UnsupportedMediaType("send Content-Type: application/json")
        accept = header(scope, b"accept")
        if path in MCP_PATHS and not accepts_json_and_sse(accept):
            raise NotAcceptable("accept both application/json and text/event-stream")
        if path == STATELESS_PATH and not {"application/json", "application/*", "*/*"} & {
            media_type(part) for part in (accept or "").split(",")
        }:
            raise NotAcceptable("accept application/json")

    async def check_body(self, scope: Scope, is_mcp: bool) -> None:
        """An MCP body must be one JSON-RPC message; a JSON REST body must be strict JSON."""
        body = scope.get(BODY_KEY)
        if body is None:
            return
        if is_mcp:
            check: Callable[..., Any] = check_mcp_body
        elif body and media_type(header(scope, b"content-type")) == "application/json":
            check = check_rest_json
        else:
            return
        if len(body) > PARSE_IN_THREAD_BYTES:
            parsed = await trio.to_thread.run_sync(check, body, self.max_json_depth, self.max_json_items)
        else:
            parsed = check(body, self.max_json_depth, self.max_json_items)
        if is_mcp:
            scope[MESSAGE_KEY] = parsed

    def admit(self, scope: Scope, send: Send, request_id: str, slot: Slot = NO_SLOT
              ) -> tuple[Send, Callable[[], None] | None, SessionTicket | None]:
        """Count an SSE stream or a new session against the caps (429 / 503), wrap ``send``."""
        principal = scope[SCOPE_KEY].principal
        method, path = scope["method"], scope["path"]
        if method == "GET" and (path == SSE_PATH or path in MCP_PATHS):
            return McpAnswers(send, request_id), self.capacity.open_stream(principal), None
        if self.opens_session(scope):
            ticket = self.capacity.open_session(principal, slot)
            return McpAnswers(send, request_id, ticket), ticket.release, ticket
        return McpAnswers(send, request_id), None, None

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
        if length is not None and length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:
            raise E.PayloadTooLarge(limit=self.max_body_bytes)
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.read_timeout_s) as deadline:
                body, _ = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            raise E.PayloadTooLarge(limit=self.max_body_bytes) from None
        if deadline.cancelled_caught:
            raise E.RequestTimeout(timeout_s=self.read_timeout_s)
        scope[BODY_KEY] = body
        return replay(body, receive)

    async def authenticate(self, scope: Scope, transport: Transport) -> None:
        ctx = await self.authenticator.authenticate(decoded_headers(scope), transport)
        scope[SCOPE_KEY] = ctx
        user = self._users.get(ctx.principal)
        if user is None:  # immutable: one per principal will do (bounded: cleared when full)
            if len(self._users) >= 10_000:
                self._users.clear()
            user = self._users[ctx.principal] = AuthenticatedUser(
                AccessToken(token="-", client_id=ctx.principal, scopes=[])
            )
        scope["user"] = user


