"""The Quart-Trio REST application: every blueprint, the identity of each request, the OpenAPI document.

``build_rest_app`` authenticates every request through the same authenticator as the MCP
doors (public paths aside), stamps ``X-Request-Id`` and maps errors to the canonical envelope.
Besides ``Authorization: Bearer``, the REST API (and only it) accepts the web console's session
cookie, with the session's CSRF token on every state change (:mod:`northstar.policy.console_sessions`):
the console's pages act through these same routes and the same gate chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from quart import Response, current_app, g, request
from quart_trio import QuartTrio

from northstar.common import phases
from northstar.common.error_envelope import register_error_handlers
from northstar.common.identity import REQUEST_ID_HEADER, Transport
from northstar.mcp_gateway.transports.rest import openapi
from northstar.mcp_gateway.transports.rest.api import Api
from northstar.mcp_gateway.transports.rest.api import Response as Answer
from northstar.mcp_gateway.transports.rest.models import PhasesQuery
from northstar.mcp_gateway.transports.rest.responses import CallPhases, RuntimeCounts
from northstar.mcp_gateway.transports.services import Services
from northstar.policy.console_sessions import COOKIE_NAME

PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/.well-known/oauth-protected-resource",
                          "/.well-known/oauth-protected-resource/mcp"})


def rest_apis() -> list[Api]:
    """Every REST API surface, in document order."""
    from northstar.mcp_gateway.transports.rest import approvals, drafts, ops, policy, tools, upstreams, workbench

    return [ops.api, RUNTIME, tools.api, drafts.api, workbench.api, policy.api, approvals.api, upstreams.api]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every REST route (served at ``/openapi.json``)."""
    from northstar import __version__

    operations = [op for api in rest_apis() for op in api.operations]
    return openapi.document(operations, version=__version__, public_paths=PUBLIC_PATHS)


def build_rest_app(services: Services, door_counts: Callable[[], dict[str, int]] | None = None) -> QuartTrio:
    """The REST app over ``services``; ``door_counts`` (the HTTP face's open sessions and
    streams) feeds ``/v1/ops/runtime``."""
    app = QuartTrio("northstar")
    app.config.update(
        NORTHSTAR_SERVICES=services,
        NORTHSTAR_DOOR_COUNTS=door_counts,
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
        session_id = console_session_id(headers)
        if session_id is not None:  # the console's cookie: one more way to present an API key
            g.ctx, _ = await services.authenticator.authenticate_session(
                session_id, headers, Transport.HTTP, method=request.method)
            return
        g.ctx = await services.authenticator.authenticate(headers, Transport.HTTP)

    @app.after_request
    async def stamp(response: Response) -> Response:
        ctx = getattr(g, "ctx", None)
        if ctx is not None:
            response.headers[REQUEST_ID_HEADER] = ctx.request_id
        return response

    return app


def console_session_id(headers: list[tuple[str, str]]) -> str | None:
    """The console session cookie's value, when the request carries no ``Authorization`` header.

    A request with ``Authorization: Bearer`` is authenticated by it alone (and needs no CSRF
    token); the cookie is read only without one.
    """
    if any(k.lower() == "authorization" for k, _ in headers):
        return None
    return request.cookies.get(COOKIE_NAME) or None


RUNTIME = Api("runtime", "operations")


@RUNTIME.route("GET", "/v1/ops/runtime", summary="What the process holds right now", admin=True,
               responses={200: Answer(RuntimeCounts)})
async def runtime_counts() -> dict[str, Any]:
    """Trio tasks, open sessions and SSE streams, the audit log's group commit: for soak tests and leak hunting."""
    services: Services = current_app.config["NORTHSTAR_SERVICES"]
    door_counts = current_app.config["NORTHSTAR_DOOR_COUNTS"]
    counts: dict[str, Any] = {"tasks": count_tasks()}
    audit = services.audit
    if audit is not None and hasattr(audit, "stats"):
        st = audit.stats
        counts["audit"] = {"appended": st.appended, "flushes": st.flushes, "failed_flushes": st.failed_flushes,
                           "largest_batch": st.largest_batch, "pending": audit.pending, "here": st.here,
                           "mean_batch": round(st.appended / st.flushes, 2) if st.flushes else None}
    if door_counts is not None:
        counts.update(door_counts())
    return counts


@RUNTIME.route("GET", "/v1/ops/phases", summary="Where the calls' time goes, phase by phase", admin=True,
               query=PhasesQuery, responses={200: Answer(CallPhases)})
async def call_phases(query: PhasesQuery) -> dict[str, Any]:
    """Each phase of the recent calls that ran (front door and gate chain, dispatch, upstream,
    result, tool, audit, reply, total), as percentiles in µs per door and kind
    (``northstar.common.phases``): for finding where a slow call spends its time."""
    services: Services = current_app.config["NORTHSTAR_SERVICES"]
    stats = services.gateway.phases
    # The copy is quick; the summary of full rings takes milliseconds: off the event loop.
    doors = await trio.to_thread.run_sync(phases.summarise, stats.snapshot(query.recent))
    return {"keep": stats.keep, "doors": doors}


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
