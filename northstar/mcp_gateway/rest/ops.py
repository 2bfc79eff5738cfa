"""Health and metrics. ``/health`` is public; ``/metrics`` needs an admin credential (it counts
every tenant's calls)."""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Response

from northstar import __version__
from northstar.common import errors as E
from northstar.mcp_gateway.rest.common import require_admin, services

AUDIT_PROBE_S = 2.0
bp = Blueprint("ops", __name__)


@bp.get("/health")
async def health() -> tuple[dict[str, Any], int]:
    svc = services()
    store_ok = True
    try:
        await svc.store.check()
    except Exception:
        store_ok = False
    audit_ok = bool(svc.audit.healthy) or (store_ok and await probe_audit(svc.audit))
    status = "ok" if store_ok and audit_ok else "degraded"
    body = {
        "status": status,
        "version": __version__,
        "store": "ok" if store_ok else "unavailable",
        "audit": "ok" if audit_ok else "unavailable",
        "tools": len(svc.gateway.catalog.tools()),
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


@bp.get("/.well-known/oauth-protected-resource")
@bp.get("/.well-known/oauth-protected-resource/mcp")
async def oauth_protected_resource() -> dict[str, Any]:
    """RFC 9728 Protected Resource Metadata; 404 when OAuth is not configured."""
    verifier = getattr(services().authenticator, "oauth", None)
    if verifier is None:
        raise E.NotFound("OAuth is not configured")
    body: dict[str, Any] = verifier.metadata()
    return body


@bp.get("/metrics")
async def metrics() -> Response:
    require_admin()
    svc = services()
    text = svc.metrics.prometheus() if getattr(svc, "metrics", None) else ""
    return Response(text, content_type="text/plain; version=0.0.4")
