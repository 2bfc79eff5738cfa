"""Health, metrics, the OAuth resource metadata and the OpenAPI document. ``/health`` is
public; ``/metrics`` needs an admin credential (it counts every tenant's calls)."""

from __future__ import annotations

from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, current_app

from northstar import __version__
from northstar.common import errors as E
from northstar.mcp_gateway.transports.rest import responses as R
from northstar.mcp_gateway.transports.rest.api import Api
from northstar.mcp_gateway.transports.rest.api import Response as Answer
from northstar.mcp_gateway.transports.rest.common import services

AUDIT_PROBE_S = 2.0
api = Api("ops", "operations")
bp = api.blueprint


@api.route("GET", "/health", summary="Is the gateway serving (store and audit log reachable)?",
           responses={200: Answer(R.Health), 503: Answer(R.Health, "degraded: the store or the audit log is down")})
async def health() -> tuple[dict[str, Any], int]:
    svc = services()
    store_ok = True
    try:
        await svc.store.check()
    except Exception:
        store_ok = False
    audit_ok = bool(svc.audit.healthy) or (store_ok and await probe_audit(svc.audit))
    # Contained subsystems (store, gate_chain, ...) that are down right now, by name; a tool that
    # is down is reported too, but costs only its own calls, not the instance's health.
    # A subsystem "degraded" (shared limits unreachable, failing open: per-process limits) serves,
    # so it is named but keeps the instance in its load balancer.
    report = svc.health()
    states = report.get("subsystems", {})
    down = sorted(name for name, state in states.items() if state not in ("up", "degraded"))
    status = "ok" if store_ok and audit_ok and not down else "degraded"
    body = {
        "status": status,
        "version": __version__,
        "store": "ok" if store_ok else "unavailable",
        "audit": "ok" if audit_ok else "unavailable",
        "tools": len(svc.gateway.catalog.tools()),
        **report,
        "down": down,
        "degraded": sorted(name for name, state in states.items() if state == "degraded"),
    }
    return body, 200 if status == "ok" else 503


async def probe_audit(audit: Any) -> bool:
    """While the audit log is unhealthy, commit one small probe record (bounded in time).

    Its commit is what turns the log healthy again; without it an instance taken out of a
    load balancer by a failing /health would never get the call that brings it back.
    """
    with trio.move_on_after(AUDIT_PROBE_S):
        try:
            await audit.append({"event": "health_probe", "transport": "http"})
            return True
        except E.NorthstarError:
            return False
    return False


@api.route("GET", "/.well-known/oauth-protected-resource", summary="RFC 9728 protected resource metadata",
           responses={200: Answer(R.OAuthMetadata)}, description="404 when OAuth is not configured.")
@api.route("GET", "/.well-known/oauth-protected-resource/mcp", summary="RFC 9728 metadata of the MCP endpoint",
           responses={200: Answer(R.OAuthMetadata)}, operation_id="oauth_protected_resource_mcp",
           description="404 when OAuth is not configured.")
async def oauth_protected_resource() -> dict[str, Any]:
    """RFC 9728 Protected Resource Metadata; 404 when OAuth is not configured."""
    verifier = getattr(services().authenticator, "oauth", None)
    if verifier is None:
        raise E.NotFound("OAuth is not configured")
    body: dict[str, Any] = verifier.metadata()
    return body


@api.route("GET", "/metrics", summary="Prometheus metrics: calls, latency, gate decisions, audit commits, "
           "mailboxes, upstreams, KPI values and targets (admin)",
           responses={200: Answer(None, "the Prometheus text exposition format", "text/plain")}, admin=True)
async def metrics() -> Response:
    svc = services()
    text = svc.metrics.prometheus() if getattr(svc, "metrics", None) else ""
    return Response(text, content_type=CONTENT_TYPE_LATEST)


@api.route("GET", "/openapi.json", summary="This document (OpenAPI 3.1)",
           responses={200: Answer(None, "the OpenAPI document")})
async def openapi_document() -> dict[str, Any]:
    doc: dict[str, Any] = current_app.config["NORTHSTAR_OPENAPI"]
    return doc
