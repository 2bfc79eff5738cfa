"""Workbench drafts and KPI bindings over REST (tenant-scoped)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from northstar.common import errors as E
from northstar.kpi.models import KpiBinding
from northstar.mcp_gateway.transports.rest import models as M
from northstar.mcp_gateway.transports.rest import responses as R
from northstar.mcp_gateway.transports.rest.api import Api, Response, pydantic_problems
from northstar.mcp_gateway.transports.rest.common import ctx, services

api = Api("drafts", "drafts and KPIs")
bp = api.blueprint


@api.route("PUT", "/v1/drafts/{draft_id}", summary="Save a draft as its next version", path=M.DraftPath,
           body=M.DraftBody, responses={200: Response(R.Draft, "a new version"), 201: Response(R.Draft, "version 1")},
           description="409 `conflict` with `current_version` when `expected_version` is stale; 422 with the "
                       "offending path for an invalid definition.")
async def put_draft(path: M.DraftPath, body: M.DraftBody) -> tuple[dict[str, Any], int]:
    c = ctx()
    rec = await services().drafts.save_draft(c.tenant, path.draft_id, dict(body.spec),
                                             expected_version=body.expected_version, actor=c.principal)
    return rec.to_dict(), 201 if rec.version == 1 else 200


@api.route("GET", "/v1/drafts", summary="The latest version of each draft, a page at a time",
           query=M.DraftListQuery, responses={200: Response(R.DraftList)})
async def list_drafts(query: M.DraftListQuery) -> dict[str, Any]:
    recs = await services().drafts.list_drafts(ctx().tenant, after=query.after, limit=query.limit)
    items = [r.to_dict() for r in recs]
    return {"drafts": items, "next_after": items[-1]["draft_id"] if len(items) == query.limit else None}


@api.route("GET", "/v1/drafts/{draft_id}", summary="A draft's latest version", path=M.DraftPath,
           responses={200: Response(R.Draft)})
async def get_draft(path: M.DraftPath) -> dict[str, Any]:
    return (await services().drafts.get_draft(ctx().tenant, path.draft_id)).to_dict()


@api.route("GET", "/v1/drafts/{draft_id}/versions", summary="Every version of a draft", path=M.DraftPath,
           responses={200: Response(R.DraftHistory)})
async def draft_history(path: M.DraftPath) -> dict[str, Any]:
    recs = await services().drafts.draft_history(ctx().tenant, path.draft_id)
    if not recs:
        raise E.NotFound(f"no draft {path.draft_id}", draft_id=path.draft_id)
    return {"draft_id": path.draft_id, "versions": [r.to_dict() for r in recs]}


@api.route("GET", "/v1/drafts/{draft_id}/versions/{version}", summary="One version of a draft",
           path=M.DraftVersionPath, responses={200: Response(R.Draft)})
async def get_draft_version(path: M.DraftVersionPath) -> dict[str, Any]:
    rec = await services().drafts.get_draft(ctx().tenant, path.draft_id, path.version)
    return rec.to_dict()


# -- KPI bindings ---------------------------------------------------------------------------------
def _dumped(bindings: list[KpiBinding]) -> list[dict[str, Any]]:
    return [b.model_dump(mode="json") for b in bindings]


def kpi_binding(tool_name: str, kpi_id: str, target: M.KpiTarget, *where: str | int) -> KpiBinding:
    """The binding, with the rules that span fields (an error_rate target, the window's length)."""
    fields = target.model_dump(exclude_none=True, exclude={"kpi_id"})
    try:
        return KpiBinding.model_validate({**fields, "tool_name": tool_name, "kpi_id": kpi_id})
    except ValidationError as exc:
        raise E.ValidationFailed("invalid KPI binding", errors=pydantic_problems(exc, "body", *where)) from None


@api.route("PUT", "/v1/kpi/bindings/{tool_name}", summary="Replace a tool's KPI bindings", path=M.KpiToolPath,
           body=M.KpiPutBody, responses={200: Response(R.KpiReplaced)},
           description="The body is the tool's whole set: one binding, or `{\"bindings\": [...]}`. Bindings of "
                       "this tool that are not in it are removed (listed in `removed`). To add or change one "
                       "binding and keep the others, use `PUT /v1/kpi/bindings/{tool_name}/{kpi_id}`.")
async def put_kpis(path: M.KpiToolPath, body: M.KpiPutBody) -> dict[str, Any]:
    many = isinstance(body.root, M.KpiBindingsBody)
    wanted = [kpi_binding(path.tool_name, b.kpi_id, b, *(("bindings", i) if many else ()))
              for i, b in enumerate(body.items())]
    ids = [b.kpi_id for b in wanted]
    twice = sorted({k for k in ids if ids.count(k) > 1})
    if twice:
        raise E.ValidationFailed("each kpi_id may appear once", errors=[
            {"path": E.json_pointer("bindings", ids.index(k), "kpi_id"), "message": f"{k} appears twice", "in": "body"}
            for k in twice])
    c, kpi = ctx(), services().kpi
    before = await kpi.list_kpi_bindings(c.tenant, path.tool_name)
    saved = [await kpi.save_kpi_binding(c.tenant, b, actor=c.principal) for b in wanted]
    removed = [b.kpi_id for b in before if b.kpi_id not in ids]
    for kpi_id in removed:
        await kpi.delete_kpi_binding(c.tenant, path.tool_name, kpi_id, actor=c.principal)
    return {"tool_name": path.tool_name, "bindings": _dumped(saved), "removed": removed}


@api.route("GET", "/v1/kpi/bindings/{tool_name}", summary="A tool's KPI bindings", path=M.KpiToolPath,
           responses={200: Response(R.KpiBindings)})
async def get_kpis(path: M.KpiToolPath) -> dict[str, Any]:
    bindings = await services().kpi.list_kpi_bindings(ctx().tenant, path.tool_name)
    return {"tool_name": path.tool_name, "bindings": _dumped(bindings)}


@api.route("PUT", "/v1/kpi/bindings/{tool_name}/{kpi_id}", summary="Create or replace one KPI binding",
           path=M.KpiPath, body=M.KpiTarget, responses={200: Response(R.KpiBindingOut)},
           description="Only this binding changes; the tool's other bindings are kept.")
async def put_kpi(path: M.KpiPath, body: M.KpiTarget) -> dict[str, Any]:
    c = ctx()
    binding = kpi_binding(path.tool_name, path.kpi_id, body)
    saved = await services().kpi.save_kpi_binding(c.tenant, binding, actor=c.principal)
    return saved.model_dump(mode="json")


@api.route("DELETE", "/v1/kpi/bindings/{tool_name}/{kpi_id}", summary="Remove one KPI binding", path=M.KpiPath,
           responses={200: Response(R.KpiDeleted)}, description="404 when there is no such binding.")
async def delete_kpi(path: M.KpiPath) -> dict[str, Any]:
    c = ctx()
    await services().kpi.delete_kpi_binding(c.tenant, path.tool_name, path.kpi_id, actor=c.principal)
    return {"tool_name": path.tool_name, "kpi_id": path.kpi_id, "deleted": True}
