"""Human approval of held calls over REST: the approvals inbox, approve / reject, and the rules.

``GET /v1/approvals`` lists what the caller may see (admins: every approval; others: those of
their tenant they made or may decide), ``POST /v1/approvals/{id}/approve|reject`` decides one
(a holder of the scope's approver firearm, never the caller itself). Which scopes require
approval is policy, set by admins like firearm bindings (``/v1/firearms/approvals/{scope}``) or
by a published tool's overlay. See docs/approvals.md.
"""

from __future__ import annotations

from typing import Any

from northstar.mcp_gateway.transports.rest import models as M
from northstar.mcp_gateway.transports.rest import responses as R
from northstar.mcp_gateway.transports.rest.api import Api, Response
from northstar.mcp_gateway.transports.rest.common import ctx, services
from northstar.mcp_gateway.transports.rest.policy import audit_policy

api = Api("approvals", "approvals")
bp = api.blueprint


@api.route("GET", "/v1/approvals", summary="Held calls' approvals (what the caller may see)",
           query=M.ApprovalsQuery, responses={200: Response(R.Approvals)},
           description="Newest first. Admins see every approval; anyone else the approvals of their tenant "
                       "that they made or may decide (they hold the scope's approver firearm).")
async def list_approvals(query: M.ApprovalsQuery) -> dict[str, Any]:
    return {"approvals": await services().approvals.list(ctx(), query.state, query.limit)}


@api.route("GET", "/v1/approvals/{approval_id}", summary="One approval", path=M.ApprovalPath,
           responses={200: Response(R.Approval)})
async def get_approval(path: M.ApprovalPath) -> dict[str, Any]:
    return await services().approvals.get(ctx(), path.approval_id)


@api.route("POST", "/v1/approvals/{approval_id}/approve", summary="Approve a held call", path=M.ApprovalPath,
           body=M.DecideBody, body_required=False, responses={200: Response(R.DecidedApproval)},
           description="Only a holder of the scope's approver firearm in the caller's tenant, never the caller "
                       "(403 `approval_self`); an approval that is not pending: 409 `approval_state`.")
async def approve(path: M.ApprovalPath, body: M.DecideBody | None) -> dict[str, Any]:
    reason = body.reason if body is not None else None
    return await services().approvals.decide(ctx(), path.approval_id, approve=True, reason=reason)


@api.route("POST", "/v1/approvals/{approval_id}/reject", summary="Reject a held call", path=M.ApprovalPath,
           body=M.DecideBody, body_required=False, responses={200: Response(R.DecidedApproval)},
           description="The waiting caller gets `approval_rejected` (with the reason).")
async def reject(path: M.ApprovalPath, body: M.DecideBody | None) -> dict[str, Any]:
    reason = body.reason if body is not None else None
    return await services().approvals.decide(ctx(), path.approval_id, approve=False, reason=reason)


@api.route("GET", "/v1/firearms/approvals", summary="Scopes whose calls need a human approval",
           responses={200: Response(R.ApprovalRules)})
async def list_rules() -> dict[str, Any]:
    return {"rules": services().firearms.list_approval_rules()}


@api.route("PUT", "/v1/firearms/approvals/{scope}", summary="Require approval for a scope's calls",
           path=M.ScopePath, body=M.ApprovalRuleBody, body_required=False, admin=True,
           responses={200: Response(R.AuditedApprovalRule)})
async def require(path: M.ScopePath, body: M.ApprovalRuleBody | None) -> dict[str, Any]:
    approver = body.approver_firearm if body is not None else None
    rule = await services().firearms.require_approval(path.scope, approver_firearm=approver, actor=ctx().principal)
    seq = await audit_policy("require_approval", scope=path.scope, approver_firearm=rule["approver_firearm"])
    return {**rule, "audit_seq": seq}


@api.route("DELETE", "/v1/firearms/approvals/{scope}", summary="Let a scope's calls run without approval",
           path=M.ScopePath, admin=True, responses={200: Response(R.AuditedApprovalRule)})
async def unrequire(path: M.ScopePath) -> dict[str, Any]:
    await services().firearms.clear_approval(path.scope, actor=ctx().principal)
    seq = await audit_policy("clear_approval", scope=path.scope)
    return {"scope": path.scope, "approval": None, "approver_firearm": None, "audit_seq": seq}
