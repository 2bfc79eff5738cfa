"""Workbench drafts and KPI bindings over REST (tenant-scoped)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from quart import Blueprint, request

from northstar.common import errors as E
from northstar.common.limits import MAX_VERSION, parse_int
from northstar.mcp_gateway.rest.common import ctx, expected_version, int_arg, json_body, services

bp = Blueprint("drafts", __name__)


@bp.put("/v1/drafts/<draft_id>")
async def put_draft(draft_id: str) -> tuple[dict[str, Any], int]:
    body = await json_body()
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise E.ValidationFailed("spec must be a JSON object", field="spec")
    c = ctx()
    rec = await services().drafts.save_draft(
        c.tenant, draft_id, spec, expected_version=expected_version(body), actor=c.principal
    )
    return rec.to_dict(), 201 if rec.version == 1 else 200


@bp.get("/v1/drafts")
async def list_drafts() -> dict[str, Any]:
    limit = int_arg("limit", 100, 1, 500)
    recs = await services().drafts.list_drafts(ctx().tenant, after=request.args.get("after"), limit=limit)
    items = [r.to_dict() for r in recs]
    return {"drafts": items, "next_after": items[-1]["draft_id"] if len(items) == limit else None}


@bp.get("/v1/drafts/<draft_id>")
async def get_draft(draft_id: str) -> dict[str, Any]:
    return (await services().drafts.get_draft(ctx().tenant, draft_id)).to_dict()  # type: ignore[no-any-return]


@bp.get("/v1/drafts/<draft_id>/versions")
async def draft_history(draft_id: str) -> dict[str, Any]:
    recs = await services().drafts.draft_history(ctx().tenant, draft_id)
    if not recs:
        raise E.NotFound(f"no draft {draft_id}", draft_id=draft_id)
    return {"draft_id": draft_id, "versions": [r.to_dict() for r in recs]}


@bp.get("/v1/drafts/<draft_id>/versions/<version>")
async def get_draft_version(draft_id: str, version: str) -> dict[str, Any]:
    # Not the <int:> converter: it takes any number of (Unicode) digits, unbounded.
    number = parse_int("version", version, 1, MAX_VERSION)
    rec = await services().drafts.get_draft(ctx().tenant, draft_id, number)
    return rec.to_dict()  # type: ignore[no-any-return]


@bp.put("/v1/kpi/bindings/<tool_name>")
async def put_kpi(tool_name: str) -> tuple[dict[str, Any], int]:
    from northstar.kpi.models import KpiBinding

    body = await json_body()
    items = body.get("bindings", [body]) if "bindings" in body else [body]
    if not isinstance(items, list) or not items:
        raise E.ValidationFailed("bindings must be a non-empty list", field="bindings")
    c = ctx()
    saved = []
    for raw in items:
        if not isinstance(raw, dict):
            raise E.ValidationFailed("each binding must be an object", field="bindings")
        try:
            binding = KpiBinding.model_validate({**raw, "tool_name": tool_name})
        except ValidationError as exc:
            errors = [{"path": "/".join(map(str, e["loc"])), "message": e["msg"]}
                      for e in exc.errors(include_url=False, include_input=False)]
            raise E.ValidationFailed("invalid KPI binding", errors=errors) from None
        saved.append(await services().kpi.save_kpi_binding(c.tenant, binding, actor=c.principal))
    return {"tool_name": tool_name, "bindings": [b.model_dump(mode="json") for b in saved]}, 200


@bp.get("/v1/kpi/bindings/<tool_name>")
async def get_kpi(tool_name: str) -> dict[str, Any]:
    bindings = await services().kpi.list_kpi_bindings(ctx().tenant, tool_name)
    return {"tool_name": tool_name, "bindings": [b.model_dump(mode="json") for b in bindings]}
