"""The hot path: a well-formed ``tools/call`` answered without the SDK's per-request machinery.

Every governed call still goes through the gate chain actor and is audited; what this
module skips is the protocol engine's generic dispatch (task groups, memory streams,
pydantic result models) for the one request shape that dominates traffic. It is strictly
an optimisation: a request is taken here only when it is plainly well formed, otherwise
it falls through to the SDK, which owns every error answer. Taken here:

* a single JSON-RPC request object (no batch) with ``method: tools/call``, an integer or
  string id, ``params.name`` a string and ``params.arguments`` an object (or absent);
* ``Content-Type: application/json`` and an ``Accept`` that includes ``application/json``;
* no progress token (``params._meta.progressToken``): a call that asks for progress goes to
  the SDK, whose session relays an upstream tool's progress to it;
* no ``Mcp-Param-*`` headers and no duplicated routing headers; and one of:
  - the 2026-07-28 era: the SDK's own inbound validation ladder
    (``classify_inbound_request``) accepts the envelope and headers;
  - a live handshake-era session owned by the caller (``Mcp-Session-Id``), with a
    handshake-era ``MCP-Protocol-Version`` header;
  - the stateless endpoint ``/mcp/stateless`` without a session.

Cancellation keeps the protocol's meaning: in the 2026-07-28 era a closed connection
cancels the call (the HTTP server cancels the calls registered on a connection when it reads
its end, :func:`connection_opened`; without that registry a watcher task per call waits for
the ASGI disconnect instead); in a session (or on ``/mcp/stateless``), ``notifications/cancelled``
naming a call running here cancels exactly that call, and only when the sender is the
principal that made it (:class:`~northstar.mcp_gateway.transports.http.inflight.InFlight`): a cancel naming
another principal's call is ignored and audited (``event: cancel``, ``code: not_owner``).
Either way the gate chain audits the outcome ``cancelled``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

import orjson
import trio
from mcp.shared.inbound import ERROR_CODE_HTTP_STATUS, InboundModernRoute, classify_inbound_request
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from northstar.common import errors as E
from northstar.common import phases
from northstar.common.error_envelope import INVALID_PARAMS, envelope, error_headers, tool_error_result
from northstar.common.identity import RequestContext
from northstar.common.telemetry import call_attributes, recorded, result_attributes, traceparent_header
from northstar.compat.mcp_sdk import session_open_for
from northstar.mcp_gateway.transports.http.inflight import CANCELLED, InFlight
from northstar.policy.audit_records import refused_cancel_record

log = logging.getLogger("northstar.fastpath")
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
ROUTING = (b"mcp-protocol-version", b"mcp-method", b"mcp-name", b"mcp-session-id")
JSON_HEADERS = [(b"content-type", b"application/json")]
MESSAGE_KEY = "northstar.message"  # set by the front door: the checked JSON-RPC message

# Live HTTP connections, by (client, server) address: the cancel scopes of the 2026-07-28 calls
# running on each. The HTTP server registers a connection while it reads from it and cancels
# what is left when reading ends (the client closed it), so no call needs a watcher task.
_LIVE: dict[tuple[Any, Any], set[trio.CancelScope]] = {}


def connection_opened(client: Any, server: Any) -> set[trio.CancelScope] | None:
    """Register a connection; returns its set of call scopes (None: not addressable)."""
    if not client or not server:
        return None
    key = (tuple(client), tuple(server))
    calls: set[trio.CancelScope] = set()
    _LIVE[key] = calls
    return calls


def connection_closed(client: Any, server: Any, calls: set[trio.CancelScope]) -> None:
    """Reading from the connection ended: cancel the calls still running on it."""
    key = (tuple(client), tuple(server))
    if _LIVE.get(key) is calls:
        del _LIVE[key]
    for scope in calls:
        scope.cancel()
    calls.clear()


@contextlib.contextmanager
def _while_connected(calls: set[trio.CancelScope], scope: trio.CancelScope) -> Iterator[None]:
    """Cancel ``scope`` if its connection closes while inside this block."""
    calls.add(scope)
    try:
        yield
    finally:
        calls.discard(scope)


def _dumps(obj: Any) -> bytes:
    """JSON bytes; orjson refuses integers beyond 64 bits (a caller may send them as tool
    arguments, and a tool may echo them), which the standard library writes exactly."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes] | None:
    """The request headers, or None when something here makes the request unusual."""
    out: dict[bytes, bytes] = {}
    for key, value in scope["headers"]:
        if key in out and key in ROUTING:
            return None
        if key.startswith(b"mcp-param-"):
            return None
        out[key] = value
    return out


def parse_call(body: bytes) -> dict[str, Any] | None:
    """The decoded request when it is a plainly well-formed ``tools/call``, else None."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return call_of(msg)


def call_of(msg: Any) -> dict[str, Any] | None:
    """``msg`` when it is a plainly well-formed ``tools/call`` request, else None."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or msg.get("method") != "tools/call":
        return None
    rid = msg.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return None
    params = msg.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str):
        return None
    args = params.get("arguments")
    if args is not None and not isinstance(args, dict):
        return None
    meta = params.get("_meta")
    if meta is not None and (not isinstance(meta, dict) or "progressToken" in meta):
        return None  # progress is relayed by the SDK's session path
    return msg


def call_result(output: dict[str, Any], modern: bool, mcp: dict[str, Any] | None = None) -> dict[str, Any]:
    """A tool's output as an MCP result; an upstream tool's own MCP result (``mcp``) as it is."""
    if mcp is not None:
        result = dict(mcp)
        if modern:
            result["resultType"] = "complete"
        return result
    result = {
        "content": [{"type": "text", "text": _dumps(output).decode()}],
        "structuredContent": output,
        "isError": False,
    }
    if modern:
        result["resultType"] = "complete"
    return result


def error_result(err: E.NorthstarError, request_id: str, modern: bool) -> dict[str, Any]:
    result = tool_error_result(err, request_id)
    if modern:
        result["resultType"] = "complete"
    return result


class FastPath:
    def __init__(self, gateway: Any, manager: Any) -> None:
        self.gateway = gateway
        self.manager = manager
        self.inflight = InFlight()
        self.taken = 0

    # -- eligibility ----------------------------------------------------------------------
    def era(self, scope: dict[str, Any], headers: dict[bytes, bytes], msg: dict[str, Any]) -> str | None:
        version = headers.get(VERSION_HEADER, b"").decode("latin-1")
        session = headers.get(SESSION_HEADER)
        if version in MODERN_PROTOCOL_VERSIONS and session is None:
            str_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
            verdict = classify_inbound_request(msg, headers=str_headers)
            return "modern" if isinstance(verdict, InboundModernRoute) else None
        if session is not None and version in HANDSHAKE_PROTOCOL_VERSIONS:
            return "session" if self.owns_session(scope, session.decode("latin-1")) else None
        if session is None and scope["path"] == "/mcp/stateless" and version in ("", *HANDSHAKE_PROTOCOL_VERSIONS):
            return "stateless"
        return None

    def owns_session(self, scope: dict[str, Any], session_id: str) -> bool:
        """A live session the SDK would serve for this caller (its owner rule, not ours)."""
        return session_open_for(self.manager, session_id, scope.get("user"))

    @staticmethod
    def acceptable(headers: dict[bytes, bytes]) -> bool:
        ctype = headers.get(b"content-type", b"").lower()
        return ctype.startswith(b"application/json") and b"application/json" in headers.get(b"accept", b"")

    # -- handling -------------------------------------------------------------------------
    async def try_handle(self, scope: dict[str, Any], receive: Receive, send: Send) -> bool:
        """Answer the request and return True, or return False to let the SDK take it."""
        headers = _headers(scope)
        if headers is None or not self.acceptable(headers):
            return False
        message = scope[MESSAGE_KEY]
        if message.get("method") == "notifications/cancelled":
            return await self.try_cancel(scope, headers, message, send)
        msg = call_of(message)
        if msg is None:
            return False
        era = self.era(scope, headers, msg)
        if era is None:
            return False
        self.taken += 1
        ctx: RequestContext = scope["northstar.ctx"]
        clock = phases.start("http", scope.get(phases.RECEIVED_AT_KEY))
        try:
            if self.gateway.tracing.enabled:
                reply = await self.dispatch_traced(scope, receive, headers, msg, era)
            else:
                reply = await self.dispatch(scope, receive, headers, msg, era)
            if reply is None:  # cancelled: the caller is gone or asked for it; nothing to answer
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return True
            await self.respond(send, msg["id"], reply, era == "modern", ctx.request_id)
            self.gateway.phases.finish(clock)
        finally:
            phases.drop(clock)  # not finished (cancelled, failed): none of it is kept
        return True

    async def dispatch(self, scope: dict[str, Any], receive: Receive, headers: dict[bytes, bytes],
                       msg: dict[str, Any], era: str) -> Any:
        """Run the call, cancellable as its era says: a CallResult, an error, or None (cancelled)."""
        ctx: RequestContext = scope["northstar.ctx"]
        params = msg["params"]
        if era == "modern":
            calls = _LIVE.get((tuple(scope.get("client") or ()), tuple(scope.get("server") or ())))
            if calls is not None:
                return await self.call_on_connection(ctx, params, calls)
            return await self.call_watching_disconnect(ctx, params, receive)
        session = headers.get(SESSION_HEADER, b"").decode("latin-1")
        conn = _LIVE.get((tuple(scope.get("client") or ()), tuple(scope.get("server") or ())))
        return await self.call_cancellable(ctx, params, session, msg["id"], wait=era == "session", conn=conn)

    async def dispatch_traced(self, scope: dict[str, Any], receive: Receive, headers: dict[bytes, bytes],
                              msg: dict[str, Any], era: str) -> Any:
        """:meth:`dispatch` in the request's span (parent: the client's ``traceparent`` header or
        ``_meta.traceparent``)."""
        carrier = traceparent_header(headers) or msg["params"].get("_meta")
        attributes = {**call_attributes(scope["northstar.ctx"]), "northstar.fast_path": era}
        with self.gateway.tracing.door("tools/call", carrier, attributes) as span, recorded(span):
            reply = await self.dispatch(scope, receive, headers, msg, era)
            if reply is None:
                span.set_attribute("northstar.outcome", "cancelled")
            elif isinstance(reply, E.NorthstarError):
                span.set_attribute("northstar.outcome", "error")
                span.set_attribute("northstar.error_code", reply.code)
            else:
                result_attributes(span, reply)
            return reply

    async def call(self, ctx: RequestContext, params: dict[str, Any], wait: bool = True,
                   abandon: Callable[[], AbstractContextManager[None]] | None = None) -> Any:
        # /mcp/stateless answers a held call at once (approval_pending): docs/approvals.md.
        try:
            return await self.gateway.call_tool(ctx, params["name"], params.get("arguments"), wait_approval=wait,
                                                abandon=abandon)
        except E.NorthstarError as err:
            return err

    async def call_cancellable(self, ctx: RequestContext, params: dict[str, Any], session: str, rid: Any,
                               wait: bool = True, conn: set[trio.CancelScope] | None = None) -> Any:
        with trio.CancelScope() as cs:
            call = self.inflight.add(ctx.principal, session, rid, cs)
            # A session's call outlives its connection (2025-era rule), but a held call's wait
            # for approval does not: nothing ran yet, and the client re-issues the call later.
            abandon = partial(_while_connected, conn, cs) if conn is not None else None
            try:
                return await self.call(ctx, params, wait, abandon)
            finally:
                self.inflight.remove(call)
        return None

    async def call_on_connection(self, ctx: RequestContext, params: dict[str, Any],
                                 calls: set[trio.CancelScope]) -> Any:
        with trio.CancelScope() as cs:
            calls.add(cs)
            try:
                return await self.call(ctx, params)
            finally:
                calls.discard(cs)
        return None

    async def call_watching_disconnect(self, ctx: RequestContext, params: dict[str, Any], receive: Receive) -> Any:
        reply: list[Any] = []

        async def watch(cancel: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            reply.append(await self.call(ctx, params))
            nursery.cancel_scope.cancel()
        return reply[0] if reply else None

    async def try_cancel(self, scope: dict[str, Any], headers: dict[bytes, bytes], msg: dict[str, Any],
                         send: Send) -> bool:
        """Cancel the sender's own call named by a ``notifications/cancelled``; else let the SDK answer.

        The front door has checked ``requestId`` (a valid JSON-RPC id). A cancel naming another
        principal's live call cancels nothing and is audited once per sender and call; the SDK
        then answers it as it answers any cancel naming nothing (202, or 404 for a session
        that is not the sender's), so the sender learns nothing from the answer.
        """
        params = msg.get("params")
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if request_id is None or "id" in msg:
            return False
        ctx: RequestContext = scope["northstar.ctx"]
        session = headers.get(SESSION_HEADER, b"").decode("latin-1")
        verdict, owners = self.inflight.cancel(ctx.principal, session, request_id)
        if owners:
            await self.report_refused(ctx, request_id, owners)
        if verdict != CANCELLED:
            return False
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return True

    async def report_refused(self, ctx: RequestContext, request_id: Any, owners: list[str]) -> None:
        log.warning("refused a cancel naming another principal's call", extra={
            "request_id": ctx.request_id, "principal": ctx.principal, "owners": owners})
        try:
            await self.gateway.runner.audit.append(refused_cancel_record(ctx, request_id))
        except E.NorthstarError:  # the cancel is refused either way; the log above has it
            log.error("could not audit a refused cancel", extra={"request_id": ctx.request_id})

    async def respond(self, send: Send, rid: Any, reply: Any, modern: bool, request_id: str) -> None:
        if isinstance(reply, E.NorthstarError):
            body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "result": error_result(reply, request_id, modern)}
        elif reply.ok:
            body = {"jsonrpc": "2.0", "id": rid, "result": call_result(reply.output or {}, modern, reply.mcp)}
        elif isinstance(reply.error, E.UnknownTool):
            data = envelope(reply.error, request_id)["error"]
            body = {"jsonrpc": "2.0", "id": rid,
                    "error": {"code": INVALID_PARAMS, "message": reply.error.message, "data": data}}
        else:
            body = {"jsonrpc": "2.0", "id": rid, "result": error_result(reply.error, request_id, modern)}
        status = ERROR_CODE_HTTP_STATUS.get(body["error"]["code"], 200) if modern and "error" in body else 200
        extra: list[tuple[bytes, bytes]] = []
        if "error" in body:  # the envelope names the status this answer really has
            body["error"]["data"]["http_status"] = status
            if status >= 400:  # an HTTP error answer carries the error headers, as every other does
                extra = [(k.lower().encode(), v.encode()) for k, v in error_headers(reply.error, request_id).items()]
        payload = _dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *extra]})
        await send({"type": "http.response.body", "body": payload})
