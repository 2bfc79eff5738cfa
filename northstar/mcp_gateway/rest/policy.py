"""Firearm bindings and grants, API keys and the audit log over REST.

Changing policy needs the admin permission, and every change is itself written to the
audit log (``event: policy``). Admins read the whole audit log by its global ``seq``; anyone
else reads only the records of their own calls, numbered by their tenant's ``tenant_seq``
(:func:`own_view`).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from northstar.common import errors as E
from northstar.mcp_gateway.rest.common import ctx, int_arg, json_body, require_admin, services

bp = Blueprint("policy", __name__)


async def audit_policy(action: str, **fields: Any) -> int:
    c = ctx()
    record = {"event": "policy", "action": action, "request_id": c.request_id, "tenant": c.tenant,
              "user": c.user, "principal": c.principal, "transport": c.transport.value, **fields}
    entry = await services().audit.append(record)
    return int(entry.seq)


def _str_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise E.ValidationFailed(f"{name} must be a non-empty string", field=name)
    return value


@bp.get("/v1/firearms/bindings")
async def list_bindings() -> dict[str, Any]:
    return {"bindings": services().firearms.list_bindings()}


@bp.put("/v1/firearms/bindings/<scope>")
async def bind(scope: str) -> dict[str, Any]:
    c = require_admin()
    body = await json_body()
    firearm = _str_field(body, "firearm")
    binding = await services().firearms.bind(scope, firearm, actor=c.principal)
    seq = await audit_policy("bind", scope=scope, firearm=firearm)
    return {**binding, "audit_seq": seq}


@bp.delete("/v1/firearms/bindings/<scope>")
async def unbind(scope: str) -> dict[str, Any]:
    c = require_admin()
    await services().firearms.unbind(scope, actor=c.principal)
    seq = await audit_policy("unbind", scope=scope)
    return {"scope": scope, "firearm": None, "audit_seq": seq}


@bp.get("/v1/firearms/grants")
async def list_grants() -> dict[str, Any]:
    c = ctx()
    tenant = request.args.get("tenant") if c.is_admin else c.tenant
    grants = services().firearms.list_grants(tenant)
    if not c.is_admin:
        grants = [g for g in grants if g["user"] == c.user]
    return {"grants": grants}


@bp.post("/v1/firearms/grants")
async def grant() -> tuple[dict[str, Any], int]:
    c = require_admin()
    body = await json_body()
    tenant, user, firearm = (_str_field(body, k) for k in ("tenant", "user", "firearm"))
    from northstar.common.identity import TENANT_HEADER, USER_HEADER, validate_value

    validate_value(TENANT_HEADER, tenant or "")
    validate_value(USER_HEADER, user or "")
    reason = _str_field(body, "reason", required=False)
    expires = _str_field(body, "expires_at", required=False)
    g = await services().firearms.grant(tenant, user, firearm, granted_by=c.principal, reason=reason,
                                        expires_at=expires)
    seq = await audit_policy("grant", grant_tenant=tenant, grant_user=user, firearm=firearm, reason=reason,
                             expires_at=expires)
    return {**g.to_dict(), "audit_seq": seq}, 201


@bp.delete("/v1/firearms/grants/<tenant>/<user>/<firearm>")
async def revoke(tenant: str, user: str, firearm: str) -> dict[str, Any]:
    c = require_admin()
    await services().firearms.revoke(tenant, user, firearm, actor=c.principal)
    seq = await audit_policy("revoke", grant_tenant=tenant, grant_user=user, firearm=firearm)
    return {"tenant": tenant, "user": user, "firearm": firearm, "revoked": True, "audit_seq": seq}


def own_view(entry: Any) -> dict[str, Any]:
    """A caller's own record as a non-admin sees it: numbered by its tenant's ``tenant_seq``.

    The global ``seq`` and the chain hashes stay out: the hashes link to other tenants'
    entries, and (a hash being over the global seq) would let a caller with two consecutive
    records of its own work out how much happened in between, everywhere.
    """
    record = {k: v for k, v in entry.record.items() if k not in ("decision_seq", "decision_tenant_seq")}
    if "decision_tenant_seq" in entry.record:
        record["decision_seq"] = entry.record["decision_tenant_seq"]
    return {"seq": entry.tenant_seq, "ts": entry.ts, **record}


@bp.get("/v1/audit")
async def audit_query() -> dict[str, Any]:
    c = ctx()
    limit = int_arg("limit", 100, 1, 1000)
    after = request.args.get("after_seq")
    # Non-admins: only their own records (whatever tenant / user they ask for), paged by tenant_seq.
    entries = await services().audit.query(
        tenant=request.args.get("tenant") if c.is_admin else c.tenant,
        tool=request.args.get("tool"),
        user=request.args.get("user") if c.is_admin else c.user,
        decision=request.args.get("decision"),
        since=request.args.get("since"),
        until=request.args.get("until"),
        after_seq=int(after) if after and after.isdigit() else None,
        limit=limit,
        by_tenant_seq=not c.is_admin,
    )
    if c.is_admin:
        items = [{"seq": e.seq, "ts": e.ts, "hash": e.hash, "prev_hash": e.prev_hash, "tenant_seq": e.tenant_seq,
                  **e.record} for e in entries]
    else:
        items = [own_view(e) for e in entries]
    next_cursor = items[-1]["seq"] if len(items) == limit else None
    return {"entries": items, "next_after_seq": next_cursor}


@bp.get("/v1/audit/verify")
async def audit_verify() -> dict[str, Any]:
    # Admins only: it walks the whole chain (every tenant's records), so it is both costly
    # and a count of everyone's activity.
    require_admin()
    report: dict[str, Any] = (await services().audit.verify()).to_dict()
    return report


@bp.post("/v1/keys")
async def create_key() -> tuple[dict[str, Any], int]:
    c = require_admin()
    body = await json_body()
    tenant, user = _str_field(body, "tenant"), _str_field(body, "user")
    admin = bool(body.get("admin", False))
    # The key records how its minting request was authenticated (an admin key or an admin token).
    secret, key = await services().keys.create(tenant, user, admin=admin, label=body.get("label"),
                                               actor=c.principal, provenance=c.authenticated_by)
    await audit_policy("key_create", key_id=key.key_id, key_tenant=tenant, key_user=user, admin=admin,
                       provenance=c.authenticated_by)
    return {"key": secret, **key.public()}, 201


@bp.delete("/v1/keys/<key_id>")
async def revoke_key(key_id: str) -> dict[str, Any]:
    c = require_admin()
    await services().keys.revoke(key_id, actor=c.principal)
    await audit_policy("key_revoke", key_id=key_id)
    return {"key_id": key_id, "revoked": True}
