"""The MCP protocol face of the gateway, built on the official SDK's low-level ``Server``.

The SDK owns the protocol engine (handshake and 2026-07-28 eras, JSON-RPC framing,
``notifications/cancelled``); this module is the glue: its handlers turn MCP requests into
gateway calls with a :class:`RequestContext`, and gateway results into MCP results.

* ``tools/list``: one MCP tool per operation (wire names, schemas, ``_meta``), cached per
  catalogue and policy version.
* ``tools/call``: through the gate chain. Unknown tool -> JSON-RPC ``-32602``; every other
  failure (bad arguments, ``firearm_required``, limits, timeouts, tool errors) -> a result
  with ``isError: true`` whose ``structuredContent`` is the canonical error envelope.
  No exception ever escapes as JSON-RPC code 0.
* ``resources/list`` / ``resources/read``: media assets, read through the same gate chain
  as ``media_v2.list_assets`` / ``media_v2.get_asset`` (so reads are governed and audited).
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mcp_types as types
import trio
from mcp.server import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from northstar import __version__
from northstar.common import errors as E
from northstar.common.error_envelope import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    envelope,
    tool_error_result,
)
from northstar.common.identity import RequestContext, Transport, new_request_id
from northstar.common.telemetry import carrier_of
from northstar.compat.mcp_sdk import connection_of
from northstar.mcp_gateway.transports.http.asgi import SCOPE_KEY
from northstar.mcp_gateway.transports.stdio import handshake

if TYPE_CHECKING:  # the gateway core loads with the runtime, after stdio has answered initialize
    from northstar.mcp_gateway.facade.gateway import Gateway

log = logging.getLogger("northstar.mcp")
ASSET_URI_PREFIX = "media://assets/"
NOTIFY_TIMEOUT_S = 5.0
STARTUP_WAIT_S = 60.0


def context_of(ctx: Any, fallback: RequestContext | None) -> RequestContext:
    """The RequestContext of an MCP request: set per HTTP request by the ASGI front end."""
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    if scope is not None and SCOPE_KEY in scope:
        base: RequestContext = scope[SCOPE_KEY]
        return base
    if fallback is not None:
        return fallback.replace(request_id=new_request_id())
    raise E.Unauthorized("no identity for this request")


def ok_result(output: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(output, separators=(",", ":"), ensure_ascii=False)
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=output)


def passthrough_result(wire: dict[str, Any]) -> types.CallToolResult:
    """An upstream tool's MCP result, as it answered (content blocks, structuredContent, isError)."""
    return types.CallToolResult.model_validate(wire)


def progress_sink(ctx: Any) -> Any:
    """Relays an upstream's progress to this request's caller, when it asked for progress."""
    meta = getattr(ctx, "meta", None)
    if not meta or meta.get("progress_token") is None:
        return None
    session = getattr(ctx, "session", None)
    return getattr(session, "report_progress", None)


def error_result(err: E.NorthstarError, request_id: str) -> types.CallToolResult:
    return types.CallToolResult.model_validate(tool_error_result(err, request_id))


def protocol_error(err: E.NorthstarError, request_id: str) -> MCPError:
    code = INVALID_PARAMS if isinstance(err, E.UnknownTool | E.NotFound) else INTERNAL_ERROR
    return MCPError(code=code, message=err.message, data=envelope(err, request_id)["error"])


class SessionRegistry:
    """Live handshake-era connections that should hear ``notifications/tools/list_changed``.

    It holds the SDK's per-connection ``Connection`` objects (the ``ServerSession`` a
    handler sees is a per-request wrapper), weakly: a connection that ends drops out.
    """

    def __init__(self) -> None:
        self.sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.changed = trio.Event()
        self.sent = 0
        self._started = False

    def remember(self, connection: Any) -> None:
        self.sessions.add(connection)

    def signal(self) -> None:
        self.changed.set()

    async def run(self, *, task_status: trio.TaskStatus[SessionRegistry] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._started:
            # The notifier starts last: what changed before is the catalogue every session is
            # first answered from (their handlers wait for the whole tree), nothing to re-list.
            self._started = True
            self.changed = trio.Event()
        task_status.started(self)
        while True:
            await self.changed.wait()
            self.changed = trio.Event()
            async with trio.open_nursery() as nursery:
                for session in list(self.sessions):
                    nursery.start_soon(self._notify, session)

    async def _notify(self, connection: Any) -> None:
        # Connection.notify is best effort and never raises: a closed stream drops it.
        with trio.move_on_after(NOTIFY_TIMEOUT_S):
            await connection.notify("notifications/tools/list_changed", None)
            self.sent += 1


class McpFace:
    """Builds the SDK server whose handlers call the gateway.

    Give it the ``gateway`` and, optionally, a ``ready`` event: then the transport can
    start (and answer ``initialize``, which needs nothing but the server's identity) while
    the rest of the tree is still starting; every other handler waits for ``ready`` (at most
    ``STARTUP_WAIT_S``, then ``service_unavailable``). The stdio door does this, since Claude
    Desktop spawns it on every launch.

    A call cancelled while it waits for start-up (``notifications/cancelled``, which the SDK
    turns into the cancellation of that handler) ends there: it never reached the gate chain,
    so it never ran and has no audit record, as any request abandoned before its decision.
    """

    def __init__(
        self,
        gateway: Gateway | None = None,
        *,
        ready: trio.Event | None = None,
        stdio_context: RequestContext | None = None,
        registry: SessionRegistry | None = None,
    ) -> None:
        self._gateway = gateway
        self._ready = ready
        self.stdio_context = stdio_context
        self.registry = registry or SessionRegistry()
        self._list_cache: dict[tuple[Any, ...], types.ListToolsResult] = {}
        self.server: Server[Any] = Server(
            handshake.SERVER_NAME,
            version=__version__,
            title=handshake.SERVER_TITLE,
            description=handshake.SERVER_DESCRIPTION,
            instructions=handshake.INSTRUCTIONS,
            get_tool_input_schema=self.input_schema_for,
            on_list_tools=self.on_list_tools,
            on_call_tool=self.on_call_tool,
            on_list_resources=self.on_list_resources,
            on_read_resource=self.on_read_resource,
        )
        self.server.middleware.append(self.remember_session)

    @property
    def gateway(self) -> Gateway:
        gateway = self._gateway
        if gateway is None:
            raise E.ServiceUnavailable("the gateway is starting", retry_after=1)
        return gateway

    async def until_ready(self) -> None:
        """Wait for the runtime; cancellable (a cancelled call stops here, before any decision)."""
        ready = self._ready
        if ready is None or ready.is_set():
            return
        with trio.move_on_after(STARTUP_WAIT_S):
            await ready.wait()
        if not ready.is_set():
            raise E.ServiceUnavailable("the gateway is still starting", retry_after=1)

    def init_options(self) -> Any:
        return self.server.create_initialization_options(NotificationOptions(tools_changed=True))

    def identity(self, ctx: Any) -> RequestContext:
        return context_of(ctx, self.stdio_context)

    async def remember_session(self, ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        if ctx.request_id is not None and ctx.method in ("initialize", "tools/list"):
            connection = connection_of(getattr(ctx, "session", None))
            if connection is not None and str(ctx.protocol_version) not in MODERN_PROTOCOL_VERSIONS:
                self.registry.remember(connection)
        return await call_next(ctx)

    def input_schema_for(self, name: str) -> dict[str, Any] | None:
        if self._ready is not None and not self._ready.is_set():
            return None
        resolved = self.gateway.catalog.resolve(name)
        if resolved is None:
            return None
        from northstar.mcp_gateway.schema_gen import input_schema

        return input_schema(resolved.op)

    async def on_list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        rctx = self.identity(ctx)
        try:
            await self.until_ready()
        except E.NorthstarError as err:
            raise protocol_error(err, rctx.request_id) from None
        gw = self.gateway
        granted = gw.firearms.granted(rctx.tenant, rctx.user)
        key = (gw.catalog.version, tuple(sorted(gw.firearms.bindings().items())), granted)
        cached = self._list_cache.get(key)
        if cached is None:
            tools = [types.Tool.model_validate(t) for t in gw.list_tools(rctx)]
            cached = types.ListToolsResult(tools=tools)
            if len(self._list_cache) > 256:
                self._list_cache.clear()
            self._list_cache[key] = cached
        return cached

    async def on_call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        rctx = self.identity(ctx)
        try:
            await self.until_ready()
            gateway = self.gateway
            if gateway.tracing.enabled:
                headers = getattr(getattr(ctx, "request", None), "headers", None)
                carrier = carrier_of(headers, getattr(ctx, "meta", None))
                result = await gateway.call_at_door(rctx, params.name, params.arguments, carrier,
                                                    progress=progress_sink(ctx))
            else:
                result = await gateway.call_tool(rctx, params.name, params.arguments, progress=progress_sink(ctx))
        except E.NorthstarError as err:
            return error_result(err, rctx.request_id)
        except Exception as exc:
            log.exception("tools/call failed", extra={"request_id": rctx.request_id})
            raise MCPError(code=INTERNAL_ERROR, message="internal error") from exc
        if result.ok:
            return ok_result(result.output or {}) if result.mcp is None else passthrough_result(result.mcp)
        assert result.error is not None
        if isinstance(result.error, E.UnknownTool):
            raise protocol_error(result.error, rctx.request_id)
        return error_result(result.error, rctx.request_id)

    async def _governed(self, ctx: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
        rctx = self.identity(ctx)
        try:
            await self.until_ready()
            result = await self.gateway.call_tool(rctx, name, args)
        except E.NorthstarError as err:
            raise protocol_error(err, rctx.request_id) from None
        if not result.ok:
            assert result.error is not None
            raise protocol_error(result.error, rctx.request_id)
        return result.output or {}

    async def on_list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        try:
            await self.until_ready()
        except E.NorthstarError as err:
            raise protocol_error(err, self.identity(ctx).request_id) from None
        if self.gateway.catalog.resolve("media_v2.list_assets") is None:
            return types.ListResourcesResult(resources=[])
        out = await self._governed(ctx, "media_v2.list_assets", {"limit": 100})
        resources = [
            types.Resource(
                uri=f"{ASSET_URI_PREFIX}{a['asset_id']}",
                name=a.get("name", a["asset_id"]),
                mime_type=a.get("mime_type"),
                size=a.get("size"),
            )
            for a in out.get("assets", [])
        ]
        return types.ListResourcesResult(resources=resources)

    async def on_read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        if not uri.startswith(ASSET_URI_PREFIX):
            rid = self.identity(ctx).request_id
            raise protocol_error(E.NotFound(f"unknown resource {uri}"), rid)
        asset = await self._governed(ctx, "media_v2.get_asset", {"asset_id": uri.removeprefix(ASSET_URI_PREFIX)})
        mime = asset.get("mime_type")
        if asset.get("content_text") is not None:
            contents: Any = types.TextResourceContents(uri=uri, mime_type=mime, text=asset["content_text"])
        else:
            contents = types.BlobResourceContents(uri=uri, mime_type=mime, blob=asset.get("content_base64") or "")
        return types.ReadResourceResult(contents=[contents])


def transport_of(scope: dict[str, Any]) -> Transport:
    path = scope.get("path", "")
    return Transport.STREAMABLE_HTTP if path.startswith("/mcp") else Transport.SSE


