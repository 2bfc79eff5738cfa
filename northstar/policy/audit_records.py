"""The shape of audit records written by the gate chain (pure builders).

Every call leaves exactly one ``decision`` record (allow or deny). For a read-only
operation the decision record is written after the call and also carries its outcome, so
a read costs one durable append. For any other operation the decision record is committed
*before* the tool runs (so no side effect can exist without a record of its permission)
and an ``outcome`` record follows. Outcomes: ``ok``, ``error``, ``cancelled``, ``timeout``.
"""

from __future__ import annotations

from typing import Any

from northstar.common.identity import RequestContext


def base_record(ctx: RequestContext, name: str) -> dict[str, Any]:
    return {
        "request_id": ctx.request_id,
        "tenant": ctx.tenant,
        "user": ctx.user,
        "principal": ctx.principal,
        "mode": ctx.mode.value,
        "transport": ctx.transport.value,
        "sandbox": ctx.sandbox,
        "requested_name": name,
    }


def decision_record(
    base: dict[str, Any],
    *,
    allowed: bool,
    gate: str,
    code: str,
    reason: str,
    target: dict[str, Any],
    trace: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    record = {
        **base,
        **target,
        "event": "decision",
        "decision": "allow" if allowed else "deny",
        "gate": gate,
        "code": code,
        "reason": reason,
    }
    if trace is not None:
        record["trace"] = trace
    return record


def outcome_fields(outcome: str, latency_ms: float, error_code: str | None) -> dict[str, Any]:
    return {"outcome": outcome, "latency_ms": round(latency_ms, 3), "error_code": error_code}


def outcome_record(base: dict[str, Any], target: dict[str, Any], decision: Any, **fields: Any) -> dict[str, Any]:
    """The record after the tool ran; it points at its decision both ways the decision is numbered:
    ``decision_seq`` (global, for admins) and ``decision_tenant_seq`` (the tenant's count, for the caller)."""
    return {**base, **target, "event": "outcome", "decision_seq": decision.seq,
            "decision_tenant_seq": decision.tenant_seq, **fields}


def refused_cancel_record(ctx: RequestContext, target_request_id: Any) -> dict[str, Any]:
    """A ``notifications/cancelled`` that named another principal's call: who sent it, which id.

    Whose call it named is left out: the record belongs to the sender's tenant, and the
    operator's log carries the rest.
    """
    return {
        "event": "cancel",
        "decision": "deny",
        "code": "not_owner",
        "reason": "the cancel named a call of another principal; it was ignored",
        "request_id": ctx.request_id,
        "tenant": ctx.tenant,
        "user": ctx.user,
        "principal": ctx.principal,
        "mode": ctx.mode.value,
        "transport": ctx.transport.value,
        "target_request_id": target_request_id,
    }
