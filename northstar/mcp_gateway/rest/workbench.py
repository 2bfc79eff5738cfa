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

from quart import Blueprint

from northstar.common import errors as E
from northstar.common.limits import MAX_VERSION, check_int
from northstar.mcp_gateway.rest.common import ctx, json_body, require_admin, services

bp = Blueprint("workbench", __name__)


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    return None if value is None else check_int(name, value, 1, MAX_VERSION)


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


@bp.post("/v1/sandbox/run")
async def sandbox_run() -> tuple[dict[str, Any], int]:
    body = await json_body()
    tool = body.get("tool")
    if not isinstance(tool, str) or not tool:
        raise E.ValidationFailed("tool must be a tool name", field="tool")
    arguments = body.get("arguments", {})
    if not isinstance(arguments, dict):
        raise E.ValidationFailed("arguments must be a JSON object", field="arguments")
    mock = body.get("mock_policy")
    if mock is not None and not isinstance(mock, dict):
        raise E.ValidationFailed("mock_policy must be a JSON object", field="mock_policy")
    draft_id = body.get("draft_id")
    if draft_id is not None and not isinstance(draft_id, str):
        raise E.ValidationFailed("draft_id must be a string", field="draft_id")
    result = await services().sandbox.run(ctx(), tool, arguments, mock, draft_id=draft_id,
                                          draft_version=_optional_int(body, "draft_version"))
    return result.to_dict(), 200


@bp.post("/v1/drafts/<draft_id>/publish")
async def publish(draft_id: str) -> tuple[dict[str, Any], int]:
    c = require_admin()
    body = await json_body()
    return await _publisher().publish(c, draft_id, _optional_int(body, "version")), 201


@bp.get("/v1/registry/packages/<tool_id>")
async def packages(tool_id: str) -> dict[str, Any]:
    return {"tool_id": tool_id, "packages": [_redacted(p) for p in await _publisher().packages(tool_id)]}


@bp.get("/v1/registry/packages/<tool_id>/<version>")
async def package(tool_id: str, version: str) -> dict[str, Any]:
    return _redacted(await _publisher().package(tool_id, version))


@bp.get("/v1/overlays/<tool_id>")
async def overlay(tool_id: str) -> dict[str, Any]:
    view = await _publisher().overlay(tool_id)
    return {**view, "current": _redacted(view["current"]), "history": [_redacted(h) for h in view["history"]]}


@bp.post("/v1/overlays/<tool_id>/rollback")
async def rollback(tool_id: str) -> dict[str, Any]:
    c = require_admin()
    body = await json_body()
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise E.ValidationFailed("version must be a package version such as 1.0.0", field="version")
    return await _publisher().rollback(c, tool_id, version)  # type: ignore[no-any-return]


@bp.delete("/v1/overlays/<tool_id>")
async def unpublish(tool_id: str) -> dict[str, Any]:
    c = require_admin()
    return await _publisher().unpublish(c, tool_id)  # type: ignore[no-any-return]


@bp.get("/v1/kpi/status/<tool_name>")
async def kpi_status(tool_name: str) -> dict[str, Any]:
    svc = services()
    bindings = await svc.kpi.list_kpi_bindings(ctx().tenant, tool_name)
    return {"tool_name": tool_name, "kpis": svc.metrics.status(tool_name, bindings)}
