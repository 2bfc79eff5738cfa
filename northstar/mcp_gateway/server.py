"""Builds the gateway's HTTP face: the Quart-Trio REST app, the SDK's MCP transports and
the front door in front of them, and serves it all with Hypercorn (trio worker).

``build_rest_app`` wires the :class:`~northstar.common.identity.RequestContextBuilder`
(through the authenticator, on every request) and the error envelope handlers.
``serve_http`` is the supervision-tree child that runs Hypercorn until shutdown.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from typing import Any

import anyio
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.events import Closed, RawData
from hypercorn.trio import run as hypercorn_trio_run
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.utils import parse_socket_addr
from mcp.server import sse as mcp_sse
from mcp.server import streamable_http_manager as mcp_streamable_manager
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from quart import Response, current_app, g, request
from quart_trio import QuartTrio
from sse_starlette import EventSourceResponse

from northstar.common import errors as E
from northstar.common.error_envelope import register_error_handlers
from northstar.common.identity import REQUEST_ID_HEADER, Transport
from northstar.mcp_gateway import fastpath
from northstar.mcp_gateway.asgi import CapacityLimits, FrontDoor, HostOriginPolicy, send_error
from northstar.mcp_gateway.fastpath import FastPath
from northstar.mcp_gateway.mcp_server import McpFace
from northstar.mcp_gateway.rest import openapi
from northstar.mcp_gateway.rest.api import Api
from northstar.mcp_gateway.rest.api import Response as Answer
from northstar.mcp_gateway.rest.responses import RuntimeCounts

log = logging.getLogger("northstar.server")
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/.well-known/oauth-protected-resource",
                          "/.well-known/oauth-protected-resource/mcp"})


def rest_apis() -> list[Api]:
    """Every REST API surface, in document order."""
    from northstar.mcp_gateway.rest import drafts, ops, policy, tools, workbench

    return [ops.api, RUNTIME, tools.api, drafts.api, workbench.api, policy.api]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every REST route (served at ``/openapi.json``)."""
    from northstar import __version__

    operations = [op for api in rest_apis() for op in api.operations]
    return openapi.document(operations, version=__version__, public_paths=PUBLIC_PATHS)


def build_rest_app(services: Any) -> QuartTrio:
    app = QuartTrio("northstar")
    app.config.update(
        NORTHSTAR_SERVICES=services,
        NORTHSTAR_OPENAPI=openapi_document(),
        MAX_CONTENT_LENGTH=services.settings.max_body_bytes,
        BODY_TIMEOUT=services.settings.read_timeout_s,
        RESPONSE_TIMEOUT=services.settings.tool_timeout_max_s + 30,
        JSON_SORT_KEYS=False,
    )
    for api in rest_apis():
        app.register_blueprint(api.blueprint)
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


RUNTIME = Api("runtime", "operations")


@RUNTIME.route("GET", "/v1/ops/runtime", summary="What the process holds right now", admin=True,
               responses={200: Answer(RuntimeCounts)})
async def runtime_counts() -> dict[str, Any]:
    """Trio tasks, open sessions and SSE streams, the audit log's group commit: for soak tests and leak hunting."""
    services = current_app.config["NORTHSTAR_SERVICES"]
    face = services.extras.get("http")
    counts: dict[str, Any] = {"tasks": count_tasks()}
    audit = services.audit
    if audit is not None and hasattr(audit, "stats"):
        st = audit.stats
        counts["audit"] = {"appended": st.appended, "flushes": st.flushes, "failed_flushes": st.failed_flushes,
                           "largest_batch": st.largest_batch, "pending": audit.pending,
                           "mean_batch": round(st.appended / st.flushes, 2) if st.flushes else None}
    if face is not None:
        capacity = face.app.capacity
        counts.update(
            sessions=len(face.manager._server_instances),
            sse_streams=capacity.total_streams,
            sessions_opening=sum(capacity.pending.values()),
        )
    return counts


def count_tasks() -> int:
    """Every trio task below the root task (the tree is walked through its nurseries)."""
    root = trio.lowlevel.current_root_task()
    stack = [root] if root is not None else []
    total = 0
    while stack:
        task = stack.pop()
        total += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return total


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
            rest_app=self.rest,
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


async def send_with_stall_limit(stream: Any, data: bytes, stall_s: float) -> None:
    """Write ``data``; raise ``trio.TooSlowError`` when no byte could be written for ``stall_s``.

    A slow client that keeps reading is fine; one that stopped reading (its window is shut)
    is not, whatever the response (an SSE stream, a large body).
    """
    sock = getattr(stream, "socket", None)
    if sock is None:  # not a plain socket stream (e.g. TLS): bound the whole write instead
        with trio.fail_after(stall_s):
            await stream.send_all(data)
        return
    with memoryview(data) as view:
        sent = 0
        while sent < len(view):
            with trio.fail_after(stall_s):
                sent += await sock.send(view[sent:])


class IdleReaper:
    """Closes idle keep-alive connections whose timer ran out: one task for the whole server.

    Hypercorn gives every idle connection its own timer task, started at the end of each
    response and cancelled at the next request: two task switches per request for a timer
    that almost never fires. Here a connection going idle is put in an ordered table with its
    deadline (the same ``keep_alive_timeout`` for all, so insertion order is deadline order)
    and taken out when its next request starts; one task sleeps until the earliest deadline
    and closes what expired. At shutdown every idle connection is closed at once, and any
    that goes idle afterwards is closed as it does, as Hypercorn's own timer does.
    """

    def __init__(self, keep_alive_s: float) -> None:
        self.keep_alive_s = keep_alive_s
        self.idle: dict[KeepAliveTimer, float] = {}
        self.closing = False
        self._work = trio.Event()

    def arm(self, timer: KeepAliveTimer) -> None:
        if self.closing:
            timer.fire()
            return
        self.idle.pop(timer, None)
        self.idle[timer] = trio.current_time() + self.keep_alive_s
        self._work.set()

    def disarm(self, timer: KeepAliveTimer) -> None:
        self.idle.pop(timer, None)

    async def run(self, shutdown: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire)
            await shutdown.wait()
            self.closing = True
            while self.idle:
                timer, _ = self.idle.popitem()
                timer.fire()
            nursery.cancel_scope.cancel()

    async def _expire(self) -> None:
        while True:
            if not self.idle:
                self._work = trio.Event()
                await self._work.wait()
                continue
            timer, deadline = next(iter(self.idle.items()))
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)  # re-armed timers moved back: look again
                continue
            del self.idle[timer]
            try:
                timer.fire()
            except Exception:  # one connection's timer must never take every connection down
                log.exception("keep-alive timer failed")


class KeepAliveTimer:
    """A connection's keep-alive timer, kept by the server's :class:`IdleReaper`.

    Hypercorn calls ``restart`` when the connection goes idle and ``stop`` when a request
    starts or reading ends; neither switches tasks. Without a reaper (a server run some other
    way) it falls back to one timer task per idle period, started with ``start_soon``.
    """

    __slots__ = ("_action", "_armed", "_reaper", "_scope", "_task_group")

    def __init__(self, reaper: IdleReaper | None) -> None:
        self._reaper = reaper
        self._task_group: Any = None
        self._action: Any = None
        self._scope: trio.CancelScope | None = None
        self._armed = 0  # bumped on every restart and stop: a firing for an older one is stale

    async def restart(self, task_group: Any, action: Any) -> None:
        self._armed += 1
        self._task_group, self._action = task_group, action
        if self._reaper is not None:
            self._reaper.arm(self)
            return
        if self._scope is not None:
            self._scope.cancel()
        scope = self._scope = trio.CancelScope()
        task_group._nursery.start_soon(_run_in_scope, scope, action)

    async def stop(self) -> None:
        self._armed += 1
        if self._reaper is not None:
            self._reaper.disarm(self)
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    def fire(self) -> None:
        """The deadline passed (or the server is stopping): close the idle connection.

        A connection that is already gone has nothing to close: Hypercorn's task group drops
        its nursery (``None``) when it exits, and a closed nursery refuses new tasks.
        """
        nursery = getattr(self._task_group, "_nursery", None)
        if nursery is None:
            return
        try:
            nursery.start_soon(self._close_if_still_idle, self._armed)
        except RuntimeError:  # the nursery is closing
            pass

    async def _close_if_still_idle(self, armed: int) -> None:
        if armed == self._armed:  # no request started since the timer was set
            with trio.CancelScope(shield=True):
                await self._action()


async def _run_in_scope(scope: trio.CancelScope, action: Any) -> None:
    with scope:
        await action()


class GuardedTCPServer(TCPServer):
    """Hypercorn's per-connection server with two fixes the gateway depends on.

    * Writes: Hypercorn shields every socket write from cancellation, so a client that
      stops reading (a never-reading SSE client) parks the response task for ever: no
      send timeout can fire, the connection and its session are never released, and
      graceful shutdown hangs. Here a write that makes no progress for
      ``sse_send_timeout_s`` closes the connection; the application then sees a disconnect.
    * Closing: ``_close`` runs ``send_eof`` before ``aclose``; when the caller is being
      cancelled (Quart-Trio cancels its request task right after the response) the first
      raises ``Cancelled`` and the socket is never closed, so a ``Connection: close``
      response kept its descriptor until the client gave up. It is shielded here.
    * A client that hangs up on an idle keep-alive connection: the connection waited for its
      keep-alive timer before closing, one descriptor per departed client for that long.
    * Per request cost: a response write that fits the socket buffer is one non-blocking
      write; keep-alive timers are kept by one :class:`IdleReaper` task, not a task per
      idle period; the
      connection is registered so closing it cancels its 2026-07-28 calls (no watcher task).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reaper: IdleReaper | None = getattr(self.config, "northstar_idle_reaper", None)
        self.idle_task = KeepAliveTimer(self._reaper)  # type: ignore[assignment]

    async def _idle_timeout(self) -> None:
        if self._reaper is None:
            await super()._idle_timeout()
        else:  # the reaper already waited out the keep-alive time (or the server is stopping)
            await self._initiate_server_close()

    async def protocol_send(self, event: Any) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        data = event.data
        lock = self.send_lock
        if not lock.locked():
            # The common case: nobody else is writing and the socket buffer has room, so the
            # bytes go out in one non-blocking write, with no task switch and no timer.
            lock.acquire_nowait()
            try:
                sent = self._write_now(data)
                if sent < len(data):
                    await self._send_rest(memoryview(data)[sent:])
            finally:
                lock.release()
            return
        async with lock:
            await self._send_rest(data)

    def _write_now(self, data: bytes) -> int:
        """Bytes written without blocking (0 when the buffer is full or the socket is not plain)."""
        sock = getattr(self.stream, "socket", None)
        if sock is None or not data:
            return 0
        try:
            return os.write(sock.fileno(), data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return 0  # the careful path below meets the same error and closes the connection

    async def _send_rest(self, data: Any) -> None:
        stall_s = float(getattr(self.config, "northstar_write_stall_s", 10.0))
        try:
            with trio.CancelScope(shield=True):
                await send_with_stall_limit(self.stream, data, stall_s)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.protocol.handle(Closed())
        except trio.TooSlowError:
            log.info("closing a connection whose client stopped reading", extra={"stall_s": stall_s})
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        client, server = self._addresses()
        calls = fastpath.connection_opened(client, server)
        try:
            await super()._read_data()
        finally:
            if calls is not None:  # the client's end is closed: cancel the calls still running for it
                fastpath.connection_closed(client, server, calls)
            # Reading is over (EOF, reset, closed, or cancelled): nothing more can arrive. The
            # keep-alive timer of an idle connection would otherwise hold it, and its descriptor,
            # open until it fired (read_timeout_s) after the client had already gone. ``stop``
            # never waits, so it is safe here even while Cancelled propagates.
            await self.idle_task.stop()

    def _addresses(self) -> tuple[Any, Any]:
        """(client, server) as Hypercorn puts them in the ASGI scope; (None, None) if unknown."""
        sock = getattr(self.stream, "socket", None)
        if sock is None:
            return None, None
        try:
            return (parse_socket_addr(sock.family, sock.getpeername()),
                    parse_socket_addr(sock.family, sock.getsockname()))
        except OSError:
            return None, None

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            await super()._close()


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
