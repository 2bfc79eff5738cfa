"""Builds the gateway's HTTP face: the Quart-Trio REST app, the SDK's MCP transports and
the front door in front of them, and serves it all with Hypercorn (trio worker).

``build_rest_app`` wires the :class:`~northstar.common.identity.RequestContextBuilder`
(through the authenticator, on every request) and the error envelope handlers.
``serve_http`` is the supervision-tree child that runs Hypercorn until shutdown.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Any

import anyio
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import run as hypercorn_trio_run
from hypercorn.trio import serve
from mcp.server import sse as mcp_sse
from mcp.server import streamable_http_manager as mcp_streamable_manager
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sse_starlette import EventSourceResponse

from northstar.common import errors as E
from northstar.mcp_gateway.transports.console import ConsoleMount, build_console_app
from northstar.mcp_gateway.transports.http.answers import send_error
from northstar.mcp_gateway.transports.http.capacity import CapacityLimits
from northstar.mcp_gateway.transports.http.connection import GuardedTCPServer, IdleReaper
from northstar.mcp_gateway.transports.http.fastpath import FastPath
from northstar.mcp_gateway.transports.http.front_door import FrontDoor
from northstar.mcp_gateway.transports.http.host_origin import HostOriginPolicy
from northstar.mcp_gateway.transports.mcp_face import McpFace
from northstar.mcp_gateway.transports.rest.app import build_rest_app

log = logging.getLogger("northstar.server")


def random_uuid() -> uuid.UUID:
    """A UUID made of 128 random bits (``uuid4`` fixes 6 of them): unguessable session ids."""
    return uuid.UUID(bytes=secrets.token_bytes(16))


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
            rest_app=ConsoleMount(build_console_app(services), self.rest),  # /console, then the REST app
            streamable=self.manager.handle_request,
            stateless=self.stateless_manager.handle_request,
            sse_connect=self.sse_connect,
            sse_post=self.sse_post,
            authenticator=services.authenticator,
            policy=self.policy,
            max_body_bytes=settings.max_body_bytes,
            read_timeout_s=settings.read_timeout_s,
            max_json_depth=settings.max_json_depth,
            max_json_items=settings.max_json_items,
            capacity=CapacityLimits(
                max_sse_streams=settings.max_sse_streams,
                max_sse_streams_per_principal=settings.max_sse_streams_per_principal,
                max_sessions_per_principal=settings.max_sessions_per_principal,
                live_sessions=lambda: self.manager._server_instances,
            ),
        )
        # Session ids: the SDK makes them with uuid4 (122 random bits); use all 128.
        mcp_sse.uuid4 = random_uuid  # type: ignore[attr-defined]
        mcp_streamable_manager.uuid4 = random_uuid  # type: ignore[attr-defined]
        # The SDK's SSE responses (legacy /sse, GET /mcp and POST /mcp streams) ping at this interval.
        EventSourceResponse.DEFAULT_PING_INTERVAL = int(max(1, settings.sse_keepalive_s))
        if settings.fast_path:
            self.app.fastpath = FastPath(services.gateway, self.manager)

    async def sse_post(self, scope: Any, receive: Any, send: Any) -> None:
        """The legacy message endpoint, minus an SDK race: a message for a session whose stream
        is closing is accepted (202) and then handed to a closed stream, which raised out of the
        application. The client is gone; the message has nowhere to go."""
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.sse.handle_post_message(scope, receive, watch)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.info("a message arrived for a legacy SSE session that was closing; dropped")
            if not started:
                err = E.NotFound("Could not find session")
                await send_error(send, err, FrontDoor.request_id_of(scope), jsonrpc=True)

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
    # No read timeout on the connection: Hypercorn applies it to the whole connection, so it
    # would cut every SSE stream whose client stays silent (they all do) after read_timeout_s.
    # A client that sends no complete request head is closed by the idle timer instead (it
    # runs from accept until the head is in), and slow bodies get 408 from the front door.
    config.read_timeout = None
    config.keep_alive_timeout = settings.read_timeout_s
    config.h11_max_incomplete_size = 64 * 1024
    config.include_server_header = False
    config.northstar_write_stall_s = settings.sse_send_timeout_s  # type: ignore[attr-defined]  # GuardedTCPServer
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
    reaper = IdleReaper(config.keep_alive_timeout)
    config.northstar_idle_reaper = reaper  # type: ignore[attr-defined]  # read by GuardedTCPServer
    hypercorn_trio_run.TCPServer = GuardedTCPServer  # type: ignore[attr-defined]  # one per connection
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper.run, shutdown)
        async with face.manager.run(), face.stateless_manager.run():
            await serve(face.app, config, shutdown_trigger=shutdown.wait, task_status=task_status)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()
