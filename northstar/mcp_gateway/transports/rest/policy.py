"""Firearm bindings and grants, API keys and the audit log over REST.

Changing policy needs the admin permission, and every change is itself written to the
audit log (``event: policy``). Admins read the whole audit log by its global ``seq``; anyone
else reads only the records of their own calls, numbered by their tenant's ``tenant_seq``
(:func:`own_view`). Admins can also stream the whole log as JSON lines for a SIEM
(:func:`audit_export`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from quart import Response as QuartResponse

from northstar.common import errors as E
from northstar.common.error_envelope import envelope
from northstar.mcp_gateway.transports.rest import models as M
from northstar.mcp_gateway.transports.rest import responses as R
from northstar.mcp_gateway.transports.rest.api import Api, Response
from northstar.mcp_gateway.transports.rest.common import ctx, services
from northstar.storage.audit_export import MEDIA_TYPE, export_line, export_pages
from northstar.storage.core import canonical_json

api = Api("policy", "policy")
bp = api.blueprint
log = logging.getLogger("northstar.audit.export")
#: The response header naming the last seq of the export (the head when it began).
THROUGH_HEADER = "X-Audit-Through-Seq"


async def audit_policy(action: str, **fields: Any) -> int:
    c = ctx()
    record = {"event": "policy", "action": action, "request_id": c.request_id, "tenant": c.tenant,
              "user": c.user, "principal": c.principal, "transport": c.transport.value, **fields}
    entry = await services().audit.append(record)
    return int(entry.seq)


@api.route("GET", "/v1/firearms/bindings", summary="Which firearm each scope needs",
           responses={200: Response(R.Bindings)})
async def list_bindings() -> dict[str, Any]:
    return {"bindings": services().firearms.list_bindings()}


@api.route("PUT", "/v1/firearms/bindings/{scope}", summary="Bind a scope to a firearm", path=M.ScopePath,
           body=M.BindBody, admin=True, responses={200: Response(R.AuditedBinding)})
async def bind(path: M.ScopePath, body: M.BindBody) -> dict[str, Any]:
    binding = await services().firearms.bind(path.scope, body.firearm, actor=ctx().principal)
    seq = await audit_policy("bind", scope=path.scope, firearm=body.firearm)
    return {**binding, "audit_seq": seq}


@api.route("DELETE", "/v1/firearms/bindings/{scope}", summary="Open a scope again", path=M.ScopePath,
           admin=True, responses={200: Response(R.AuditedBinding)})
async def unbind(path: M.ScopePath) -> dict[str, Any]:
    await services().firearms.unbind(path.scope, actor=ctx().principal)
    seq = await audit_policy("unbind", scope=path.scope)
    return {"scope": path.scope, "firearm": None, "audit_seq": seq}


@api.route("GET", "/v1/firearms/grants", summary="Firearm grants (non-admins: their own)", query=M.GrantsQuery,
           responses={200: Response(R.Grants)})
async def list_grants(query: M.GrantsQuery) -> dict[str, Any]:
    c = ctx()
    grants = services().firearms.list_grants(query.tenant if c.is_admin else c.tenant)
    if not c.is_admin:
        grants = [g for g in grants if g["user"] == c.user]
    return {"grants": grants}


@api.route("POST", "/v1/firearms/grants", summary="Grant a firearm to a user", body=M.GrantBody, admin=True,
           responses={201: Response(R.AuditedGrant)})
async def grant(body: M.GrantBody) -> tuple[dict[str, Any], int]:
    g = await services().firearms.grant(body.tenant, body.user, body.firearm, granted_by=ctx().principal,
                                        reason=body.reason, expires_at=body.expires_at)
    seq = await audit_policy("grant", grant_tenant=body.tenant, grant_user=body.user, firearm=body.firearm,
                             reason=body.reason, expires_at=body.expires_at)
    return {**g.to_dict(), "audit_seq": seq}, 201


@api.route("DELETE", "/v1/firearms/grants/{tenant}/{user}/{firearm}", summary="Revoke a grant", path=M.GrantPath,
           admin=True, responses={200: Response(R.Revoked)}, description="It takes effect on the next call.")
async def revoke(path: M.GrantPath) -> dict[str, Any]:
    await services().firearms.revoke(path.tenant, path.user, path.firearm, actor=ctx().principal)
    seq = await audit_policy("revoke", grant_tenant=path.tenant, grant_user=path.user, firearm=path.firearm)
    return {"tenant": path.tenant, "user": path.user, "firearm": path.firearm, "revoked": True, "audit_seq": seq}


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


@api.route("GET", "/v1/audit", summary="Audit records, a page at a time", query=M.AuditQuery,
           responses={200: Response(R.AuditPage)},
           description="Non-admins see only their own records, numbered by their tenant's sequence "
                       "(`seq` is then the `tenant_seq`); admins see every record and may pick a `tenant`.")
async def audit_query(query: M.AuditQuery) -> dict[str, Any]:
    c = ctx()
    # Non-admins: only their own records (whatever tenant / user they ask for), paged by tenant_seq.
    entries = await services().audit.query(
        tenant=query.tenant if c.is_admin else c.tenant, tool=query.tool,
        user=query.user if c.is_admin else c.user, decision=query.decision,
        since=query.since, until=query.until, after_seq=query.after_seq, limit=query.limit,
        by_tenant_seq=not c.is_admin,
    )
    if c.is_admin:
        items = [{"seq": e.seq, "ts": e.ts, "hash": e.hash, "prev_hash": e.prev_hash, "tenant_seq": e.tenant_seq,
                  **e.record} for e in entries]
    else:
        items = [own_view(e) for e in entries]
    next_cursor = items[-1]["seq"] if len(items) == query.limit else None
    return {"entries": items, "next_after_seq": next_cursor}


@api.route("GET", "/v1/audit/verify", summary="Verify the whole audit chain", admin=True,
           responses={200: Response(R.AuditReport)})
async def audit_verify() -> dict[str, Any]:
    # Admins only: it walks the whole chain (every tenant's records), so it is both costly
    # and a count of everyone's activity.
    report: dict[str, Any] = (await services().audit.verify()).to_dict()
    return report


@api.route("GET", "/v1/keys", summary="Every live API key (never a secret)", admin=True,
           responses={200: Response(R.ApiKeys)})
async def list_keys() -> dict[str, Any]:
    return {"keys": await services().keys.list()}
@api.route("GET", "/v1/audit/export", summary="The audit log as JSON lines, for independent verification",
           query=M.AuditExportQuery, admin=True,
           responses={200: Response(None, "one entry a line: seq, ts, prev_hash, hash, tenant_seq, record "
                                          "(docs/api.md: the hash computation)", MEDIA_TYPE)},
           description=f"Every entry after `since`, in seq order, up to the head when the export began (the "
                       f"`{THROUGH_HEADER}` header). Streamed a page at a time; a client that stops reading "
                       "is disconnected after `sse_send_timeout_s`. A stream that ends before that seq was cut "
                       "short (its last line is then an error envelope): resume with `since` = the last seq got.")
async def audit_export(query: M.AuditExportQuery) -> QuartResponse:
    # Read the head first: a store that is down is a plain 503 before any byte of the stream.
    audit = services().audit
    through = int(await audit.head_seq())
    response = QuartResponse(export_body(audit, query.since, through, ctx().request_id), status=200,
                             content_type=MEDIA_TYPE, headers={THROUGH_HEADER: str(through)})
    # No whole-response deadline: the export is bounded by its snapshot, and a stalled client by
    # the server's write-stall limit (sse_send_timeout_s), whatever the log's size.
    response.timeout = None
    return response


async def export_body(audit: Any, since: int, through: int, request_id: str) -> AsyncIterator[bytes]:
    """The lines, one chunk per page; a failure ends the stream with an error envelope line."""
    last = since
    pages = export_pages(audit, since, through)
    try:
        async for page in pages:
            yield "".join(export_line(e) for e in page).encode("utf-8")
            last = page[-1].seq
    except E.NorthstarError as err:
        log.warning("audit export cut short after seq %d: %s", last, err.code, extra={"request_id": request_id})
        yield _error_line(err, request_id, last)
    except Exception:
        log.exception("audit export failed after seq %d", last, extra={"request_id": request_id})
        yield _error_line(E.NorthstarError(), request_id, last)
    finally:
        await pages.aclose()


def _error_line(err: E.NorthstarError, request_id: str, last: int) -> bytes:
    body = envelope(err, request_id)
    body["error"]["details"]["last_seq"] = last
    return (canonical_json(body) + "\n").encode("utf-8")


@api.route("POST", "/v1/keys", summary="Create an API key", body=M.KeyBody, admin=True,
           responses={201: Response(R.NewApiKey)})
async def create_key(body: M.KeyBody) -> tuple[dict[str, Any], int]:
    c = ctx()
    # The key records how its minting request was authenticated (an admin key or an admin token).
    secret, key = await services().keys.create(body.tenant, body.user, admin=body.admin, label=body.label,
                                               actor=c.principal, provenance=c.authenticated_by)
    await audit_policy("key_create", key_id=key.key_id, key_tenant=body.tenant, key_user=body.user, admin=body.admin,
                       provenance=c.authenticated_by)
    return {"key": secret, **key.public()}, 201


@api.route("DELETE", "/v1/keys/{key_id}", summary="Revoke an API key", path=M.KeyPath, admin=True,
           responses={200: Response(R.KeyRevoked)})
async def revoke_key(path: M.KeyPath) -> dict[str, Any]:
    await services().keys.revoke(path.key_id, actor=ctx().principal)
    await audit_policy("key_revoke", key_id=path.key_id)
    return {"key_id": path.key_id, "revoked": True}
