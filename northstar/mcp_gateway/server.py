"""Assembles the gateway's HTTP face and serves it with Hypercorn (trio worker).

:class:`HttpFace` puts the doors together: the front door (every HTTP request passes it),
behind it the SDK's Streamable HTTP session managers (``/mcp``, ``/mcp/stateless``), the
legacy SSE door (``/sse``, ``/messages/``, :mod:`~northstar.mcp_gateway.transports.sse`),
the fast path, and the Quart-Trio REST app (the :class:`RequestContext` is built by the
authenticator on every request; the error envelope handlers). ``serve_http`` is the
supervision-tree child that runs Hypercorn until shutdown.

Where the gateway relies on its libraries' internals (session ids, the session table, SSE
pings, Hypercorn's connections) it goes through :mod:`northstar.compat`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import trio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from northstar.compat import hypercorn as compat_hypercorn
from northstar.compat import mcp_sdk, sse_starlette
from northstar.mcp_gateway.transports.console import ConsoleMount, build_console_app
from northstar.mcp_gateway.transports.http.capacity import CapacityLimits
from northstar.mcp_gateway.transports.http.connection import GatewayConnections, IdleReaper
from northstar.mcp_gateway.transports.http.express import ExpressLane, ExpressMetrics
from northstar.mcp_gateway.transports.http.fastpath import FastPath
from northstar.mcp_gateway.transports.http.front_door import FrontDoor
from northstar.mcp_gateway.transports.http.host_origin import HostOriginPolicy
from northstar.mcp_gateway.transports.http.metrics_port import MetricsPort
from northstar.mcp_gateway.transports.mcp_face import McpFace
from northstar.mcp_gateway.transports.rest.app import build_rest_app
from northstar.mcp_gateway.transports.services import Services
from northstar.mcp_gateway.transports.sse import LegacySse

log = logging.getLogger("northstar.server")
#: A session's place on the shared limits engine lives this long unless renewed (every third of
#: it, while the session lives): a replica that dies frees its sessions' places within it.
SESSION_LEASE_S = 60.0


def transport_security(policy: HostOriginPolicy) -> TransportSecuritySettings:
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=policy.hosts, allowed_origins=policy.origins
    )


def warn_if_unverified() -> None:
    """Log each library whose installed version differs from the one :mod:`northstar.compat` was verified against."""
    for problem in (*compat_hypercorn.unverified(), *mcp_sdk.unverified(), *sse_starlette.unverified()):
        log.warning(problem)


class HttpFace:
    """Everything that answers HTTP: built once per gateway process."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.express: ExpressLane | None = None  # set when serving (settings.http_express)
        self.mcp = McpFace(services.gateway, registry=services.sessions)
        self.policy = HostOriginPolicy.for_bind(settings.host, settings.allowed_hosts, settings.allowed_origins)
        security = transport_security(self.policy)
        warn_if_unverified()
        # Process-wide settings of the SDK's transports: 128 random bits per session id, and
        # the ping interval of their SSE streams (legacy /sse, GET and POST /mcp).
        mcp_sdk.use_random_session_ids()
        sse_starlette.set_ping_interval(settings.sse_keepalive_s)
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
        self.sse = LegacySse(self.mcp, security)
        self.rest = build_rest_app(services, door_counts=self.door_counts)
        self.app = FrontDoor(
            rest_app=ConsoleMount(build_console_app(services), self.rest),  # /console, then the REST app
            streamable=self.manager.handle_request,
            stateless=self.stateless_manager.handle_request,
            sse_connect=self.sse.connect,
            sse_post=self.sse.post,
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
                live_sessions=partial(mcp_sdk.live_sessions, self.manager),
            ),
            shared=services.limits,
            session_lease_s=SESSION_LEASE_S,
        )
        if settings.fast_path:
            self.app.fastpath = FastPath(services.gateway, self.manager)
        self.metrics_bound: list[str] = []  # where the metrics port listens (metrics_bind)

    def door_counts(self) -> dict[str, int]:
        """Open sessions and SSE streams, for ``/v1/ops/runtime``."""
        capacity = self.app.capacity
        return {"sessions": mcp_sdk.session_count(self.manager), "sse_streams": capacity.total_streams,
                "sessions_opening": sum(capacity.pending.values())}


async def serve_metrics(face: HttpFace, bind: str, shutdown: trio.Event, *,
                        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """The metrics port (``metrics_bind``): ``/metrics`` without a credential, until shutdown."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()  # a plain Hypercorn server: none of the gateway's connection hooks
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    log.info("metrics port", extra={"bind": bind})
    await serve(MetricsPort(face.services.metrics.prometheus), config,  # type: ignore[arg-type]
                shutdown_trigger=shutdown.wait, task_status=task_status)


def hypercorn_config(settings: Any, bind: str, reaper: IdleReaper,
                     express: ExpressLane | None = None) -> compat_hypercorn.GatewayConfig:
    config = compat_hypercorn.GatewayConfig()
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
    config.write_stall_s = settings.sse_send_timeout_s
    config.connection_hooks = GatewayConnections(reaper, express)
    return config


async def serve_http(
    face: HttpFace,
    bind: str,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run Hypercorn until ``shutdown`` is set; reports the bound addresses when listening."""
    reaper = IdleReaper(face.services.settings.read_timeout_s)
    settings = face.services.settings
    face.express = ExpressLane(face.app) if settings.http_express else None
    config = hypercorn_config(settings, bind, reaper, face.express)
    registry = face.services.metrics.registry
    counted = ExpressMetrics(face.express) if face.express is not None else None
    if counted is not None:
        registry.register(counted)
    try:
        await _serve_http(face, shutdown, config, reaper, task_status)
    finally:
        if counted is not None:
            registry.unregister(counted)


async def _serve_http(face: HttpFace, shutdown: trio.Event, config: compat_hypercorn.GatewayConfig,
                      reaper: IdleReaper, task_status: trio.TaskStatus[list[str]]) -> None:
    settings = face.services.settings
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reaper.run, shutdown)
        if settings.metrics_bind:
            face.metrics_bound = await nursery.start(serve_metrics, face, settings.metrics_bind, shutdown)
        if face.services.limits.backend != "local":
            nursery.start_soon(keep_session_leases, face)
        async with face.manager.run(), face.stateless_manager.run():
            await compat_hypercorn.serve(face.app, config, shutdown_trigger=shutdown.wait, task_status=task_status)
        nursery.cancel_scope.cancel()


async def keep_session_leases(face: HttpFace) -> None:
    """Renew the shared places of this replica's live sessions; give back those that ended."""
    capacity, shared = face.app.capacity, face.services.limits
    while True:
        await trio.sleep(SESSION_LEASE_S / 3)
        live = mcp_sdk.live_sessions(face.manager)
        for sid in [sid for sid in capacity.shared_slots if sid not in live]:
            await shared.give_back(capacity.shared_slots.pop(sid))
        await shared.renew(list(capacity.shared_slots.values()), SESSION_LEASE_S)
