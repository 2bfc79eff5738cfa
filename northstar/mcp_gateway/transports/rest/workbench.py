"""The workbench over REST: sandbox runs, publishing, the registry, overlays and KPI status.

    POST   /v1/sandbox/run                     200 sandbox result (a denial too: ok=false)
    POST   /v1/drafts/{draft_id}/publish       201 {"package", "overlay"}          (admin)
    GET    /v1/registry/packages/{tool_id}     every version's package
    GET    /v1/registry/packages/{tool_id}/{version}
    GET    /v1/overlays/{tool_id}              {"current", "history"}
    POST   /v1/overlays/{tool_id}/rollback     {"version": "1.0.0"} -> 200            (admin)
    DELETE /v1/overlays/{tool_id}              unpublish; packages are kept           (admin)
    GET    /v1/kpi/status/{tool_name}          {"tool_name", "kpis": [...]}
"""

from __future__ import annotations

from typing import Any

from northstar.common import errors as E
from northstar.mcp_gateway.transports.rest import models as M
from northstar.mcp_gateway.transports.rest import responses as R
from northstar.mcp_gateway.transports.rest.api import Api, Response
from northstar.mcp_gateway.transports.rest.common import ctx, services

api = Api("workbench", "workbench")
bp = api.blueprint


def _publisher() -> Any:
    publisher = getattr(services(), "publisher", None)
    if publisher is None:
        raise E.ServiceUnavailable("the publisher is not running", retry_after=1)
    return publisher


def _redacted(doc: dict[str, Any]) -> dict[str, Any]:
    """Who published, and from which tenant's draft, is shown to admins and that tenant only."""
    c = ctx()
    source = doc.get("source") or {}
    publisher = str(doc.get("published_by") or "")
    if c.is_admin or source.get("tenant") == c.tenant or (not source and publisher.startswith(f"{c.tenant}/")):
        return doc
    return {k: v for k, v in doc.items() if k not in ("source", "published_by", "actor")}


@api.route("POST", "/v1/sandbox/run", summary="Dry-run a tool (or a draft's) with a what-if policy",
           body=M.SandboxBody, responses={200: Response(R.SandboxResult)},
           description="A denial is a 200 sandbox result with `ok: false`.")
async def sandbox_run(body: M.SandboxBody) -> tuple[dict[str, Any], int]:
    mock = body.mock_policy.model_dump() if body.mock_policy is not None else None
    result = await services().sandbox.run(ctx(), body.tool, dict(body.arguments), mock, draft_id=body.draft_id,
                                          draft_version=body.draft_version)
    return result.to_dict(), 200


@api.route("POST", "/v1/drafts/{draft_id}/publish", summary="Publish a draft as an immutable package",
           path=M.DraftPath, body=M.PublishBody, body_required=False, admin=True,
           responses={201: Response(R.Published)},
           description="The body is optional (default: the draft's latest version). 409 on a name collision, "
                       "422 when the definition fails validation or the publish lint.")
async def publish(path: M.DraftPath, body: M.PublishBody) -> tuple[dict[str, Any], int]:
    return await _publisher().publish(ctx(), path.draft_id, body.version), 201


@api.route("GET", "/v1/registry/packages/{tool_id}", summary="Every published version of a tool",
           path=M.ToolIdPath, responses={200: Response(R.Packages)})
async def packages(path: M.ToolIdPath) -> dict[str, Any]:
    docs = await _publisher().packages(path.tool_id)
    return {"tool_id": path.tool_id, "packages": [_redacted(p) for p in docs]}


@api.route("GET", "/v1/registry/packages/{tool_id}/{version}", summary="One immutable package",
           path=M.PackagePath, responses={200: Response(R.Package)})
async def package(path: M.PackagePath) -> dict[str, Any]:
    return _redacted(await _publisher().package(path.tool_id, path.version))


@api.route("GET", "/v1/overlays/{tool_id}", summary="The tool's activation overlay and its history",
           path=M.ToolIdPath, responses={200: Response(R.Overlays)})
async def overlay(path: M.ToolIdPath) -> dict[str, Any]:
    view = await _publisher().overlay(path.tool_id)
    return {**view, "current": _redacted(view["current"]), "history": [_redacted(h) for h in view["history"]]}


@api.route("POST", "/v1/overlays/{tool_id}/rollback", summary="Point the tool at an earlier package",
           path=M.ToolIdPath, body=M.RollbackBody, admin=True, responses={200: Response(R.Published)})
async def rollback(path: M.ToolIdPath, body: M.RollbackBody) -> dict[str, Any]:
    return await _publisher().rollback(ctx(), path.tool_id, body.version)  # type: ignore[no-any-return]


@api.route("DELETE", "/v1/overlays/{tool_id}", summary="Unpublish: the tool leaves the catalogue, packages stay",
           path=M.ToolIdPath, admin=True, responses={200: Response(R.OverlayChange)})
async def unpublish(path: M.ToolIdPath) -> dict[str, Any]:
    return await _publisher().unpublish(ctx(), path.tool_id)  # type: ignore[no-any-return]


@api.route("GET", "/v1/kpi/status/{tool_name}", summary="Each KPI binding's measured value and verdict",
           path=M.KpiToolPath, responses={200: Response(R.KpiStatus)})
async def kpi_status(path: M.KpiToolPath) -> dict[str, Any]:
    svc = services()
    bindings = await svc.kpi.list_kpi_bindings(ctx().tenant, path.tool_name)
    return {"tool_name": path.tool_name, "kpis": svc.metrics.status(path.tool_name, bindings)}
