"""Builds the gateway's HTTP face: the Quart-Trio REST app, the SDK's MCP transports and
the front door in front of them, and serves it all with Hypercorn (trio worker).

``build_rest_app`` wires the :class:`~northstar.common.identity.RequestContextBuilder`
(through the authenticator, on every request) and the error envelope handlers.
``serve_http`` is the supervision-tree child that runs Hypercorn until shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from quart import Response, g, request
from quart_trio import QuartTrio

from northstar.common import errors as E
from northstar.common.error_envelope import register_error_handlers
from northstar.common.identity import REQUEST_ID_HEADER, Transport
from northstar.mcp_gateway.asgi import FrontDoor, HostOriginPolicy, send_error
from northstar.mcp_gateway.fastpath import FastPath
from northstar.mcp_gateway.mcp_server import McpFace

log = logging.getLogger("northstar.server")
PUBLIC_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})


def build_rest_app(services: Any) -> QuartTrio:
    from northstar.mcp_gateway.rest import drafts, ops, policy, tools

    app = QuartTrio("northstar")
    app.config.update(
        NORTHSTAR_SERVICES=services,
        MAX_CONTENT_LENGTH=services.settings.max_body_bytes,
        BODY_TIMEOUT=services.settings.read_timeout_s,
        RESPONSE_TIMEOUT=services.settings.tool_timeout_max_s + 30,
        JSON_SORT_KEYS=False,
    )
    for bp in (ops.bp, tools.bp, drafts.bp, policy.bp):
        app.register_blueprint(bp)
    register_error_handlers(app)

    @app.before_request
    async def identify() -> None:
        headers = list(request.headers.items())
        if request.path in PUBLIC_PATHS:
            g.ctx = services.authenticator.builder.from_headers(headers, transport=Transport.HTTP)
            return
        g.ctx = await services.authenticator.authenticate(headers, Transport.HTTP)

    @app.after_request
    async def stamp(response: Response) -> Response:
        ctx = getattr(g, "ctx", None)
        if ctx is not None:
            response.headers[REQUEST_ID_HEADER] = ctx.request_id
        return response

    return app


def transport_security(policy: HostOriginPolicy) -> TransportSecuritySettings:
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=policy.hosts, allowed_origins=policy.origins
    )


class HttpFace:
    """Everything that answers HTTP: built once per gateway process."""

    def __init__(self, services: Any) -> None:
        settings = services.settings
        self.services = services
        self.mcp = McpFace(services.gateway, registry=services.sessions)
        self.policy = HostOriginPolicy.for_bind(settings.host, settings.allowed_hosts, settings.allowed_origins)
        security = transport_security(self.policy)
        self.manager = StreamableHTTPSessionManager(
            self.mcp.server,
            json_response=False,
            stateless=False,
            security_settings=security,
            session_idle_timeout=settings.session_idle_timeout_s,
            max_request_body_size=settings.max_body_bytes,
            max_sessions=settings.max_sessions,
        )
        self.stateless_manager = StreamableHTTPSessionManager(
            self.mcp.server,
            json_response=True,
            stateless=True,
            security_settings=security,
            max_request_body_size=settings.max_body_bytes,
        )
        self.sse = SseServerTransport("/messages/", security_settings=security)
        self.rest = build_rest_app(services)
        self.app = FrontDoor(
            rest_app=self.rest,
            streamable=self.manager.handle_request,
            stateless=self.stateless_manager.handle_request,
            sse_connect=self.sse_connect,
            sse_post=self.sse.handle_post_message,
            authenticator=services.authenticator,
            policy=self.policy,
            max_body_bytes=settings.max_body_bytes,
            read_timeout_s=settings.read_timeout_s,
        )
        if settings.fast_path:
            self.app.fastpath = FastPath(services.gateway, self.manager)

    async def sse_connect(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            err = E.MethodNotAllowed("the SSE stream is opened with GET")
            await send_error(send, err, FrontDoor.request_id_of(scope), jsonrpc=True)
            return
        try:
            async with self.sse.connect_sse(scope, receive, send) as (read, write):
                await self.mcp.server.run(read, write, self.mcp.init_options())
        except ValueError:
            return  # the transport already answered (a rejected request)


def hypercorn_config(settings: Any, bind: str) -> HyperConfig:
    config = HyperConfig()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.shutdown_grace_s
    config.keep_alive_timeout = 75
    config.read_timeout = int(settings.read_timeout_s)
    config.h11_max_incomplete_size = 64 * 1024
    config.include_server_header = False
    return config


async def serve_http(
    face: HttpFace,
    bind: str,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run Hypercorn until ``shutdown`` is set; reports the bound addresses when listening."""
    config = hypercorn_config(face.services.settings, bind)
    async with face.manager.run(), face.stateless_manager.run():
        await serve(face.app, config, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]
