"""Human approval of dangerous calls: the pure part (hashes, ids, records, states, the check).

A scope marked ``approval: required`` (an approval rule, :mod:`northstar.policy.firearms`) holds
its calls after every gate passed: the call gets an approval record and waits for a human
approver (:mod:`northstar.policy.approvals` does the I/O). This module decides, with no I/O:

* the *final arguments* of a call (the validated arguments, presets included, as JSON) and
  their hash, ``sha256`` of their canonical JSON: an approval is bound to exactly those bytes;
* the approval id, ``ap_<match>_<random>``: ``<match>`` is a hash of the principal, the tool and
  the argument hash, so re-issuing the same call finds its approvals by id prefix;
* the state of a record at a moment (``pending`` past its expiry reads as ``expired``);
* :func:`approval_step`: what the gate chain does with an allowed call of such a scope
  (``run`` it, ``hold`` it, or deny it, for the sandbox's simulated approvals).

States: ``pending`` -> ``approved`` | ``rejected`` | ``expired``; ``approved`` -> ``consumed``
(the call ran, exactly once) | ``expired``. Every other state is final.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from northstar.common import errors as E
from northstar.storage.core import canonical_json

STATES = ("pending", "approved", "rejected", "expired", "consumed")
APPROVAL_ID_PATTERN = r"^ap_[0-9a-f]{16}_[0-9a-f]{16}$"
SimulatedApproval = Literal["approved", "rejected", "pending"]


@dataclass(frozen=True, slots=True)
class ApprovalTicket:
    """An approved approval a re-decided call carries: the gate chain runs it when the call's
    final arguments still hash to ``args_hash``."""

    approval_id: str
    args_hash: str


def final_arguments(validated: Any) -> dict[str, Any]:
    """The arguments the tool will get, as JSON (what an approver sees and approves)."""
    if isinstance(validated, BaseModel):
        return validated.model_dump(mode="json")
    return dict(validated or {})


def args_hash(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(arguments).encode("utf-8")).hexdigest()


def match_prefix(principal: str, tool: str, digest: str) -> str:
    """The id prefix shared by every approval of one call (principal, tool, arguments)."""
    key = hashlib.sha256(f"{principal}\n{tool}\n{digest}".encode()).hexdigest()[:16]
    return f"ap_{key}_"


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_record(*, approval_id: str, ctx: Any, target: dict[str, Any], approver: str, arguments: dict[str, Any],
               digest: str, now: float, ttl_s: float) -> dict[str, Any]:
    return {
        "id": approval_id, "state": "pending", "tenant": ctx.tenant, "user": ctx.user, "principal": ctx.principal,
        "tool": target.get("canonical_name"), "tool_id": target.get("tool"), "scope": target.get("scope"),
        "operation": target.get("operation"), "approver_firearm": approver, "arguments": arguments,
        "args_hash": digest, "created_at": iso(now), "created_ts": now, "expires_at": iso(now + ttl_s),
        "expires_ts": now + ttl_s, "request_id": ctx.request_id, "transport": ctx.transport.value,
        "decided_by": None, "decided_at": None, "reason": None, "consumed_at": None,
    }


def state_at(record: dict[str, Any], now: float) -> str:
    """The record's state at ``now``: an undecided or unused approval past its expiry is expired."""
    state = str(record["state"])
    if state in ("pending", "approved") and now >= float(record["expires_ts"]):
        return "expired"
    return state


def public_view(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The record as the API shows it (its state as of now, no internal timestamps, and of a
    kept outcome only that there is one: an approver decides on arguments, not on outputs)."""
    out = {k: v for k, v in record.items() if k not in ("created_ts", "expires_ts", "result")}
    out["state"] = state_at(record, now)
    out["result_kept"] = record.get("result") is not None
    return out


#: A consumed approval keeps its call's outcome up to this size (canonical JSON), so a caller
#: that went away while it ran gets it, once, by re-issuing the same call before the approval's expiry.
MAX_KEPT_RESULT_BYTES = 256 * 1024


def kept_outcome(ok: bool, output: Any, mcp: Any, upstream: Any, audit_seq: int | None) -> dict[str, Any] | None:
    """What a consumed approval keeps of its call's outcome: a result (a tool's output, or an
    upstream's own result, ``isError`` included), never a gateway error; None when too large."""
    if not ok and mcp is None:
        return None
    kept = {"ok": ok, "output": output, "mcp": mcp, "upstream": upstream, "audit_seq": audit_seq}
    try:
        size = len(canonical_json(kept).encode("utf-8"))
    except (TypeError, ValueError):
        return None
    return kept if size <= MAX_KEPT_RESULT_BYTES else None


def redeliverable(record: dict[str, Any], now: float) -> bool:
    """A consumed approval whose kept outcome a re-issue of the same call gets (until its expiry)."""
    return record["state"] == "consumed" and record.get("result") is not None and now < float(record["expires_ts"])


def outcome_error(record: dict[str, Any], state: str) -> E.NorthstarError:
    """What a waiting caller gets when its approval ended without an approval."""
    if state == "rejected":
        return E.ApprovalRejected(approval_id=record["id"], reason=record.get("reason"),
                                  decided_by=record.get("decided_by"))
    if state == "expired":
        return E.ApprovalExpired(approval_id=record["id"], expires_at=record["expires_at"])
    return E.ApprovalState(f"the approval is {state}", approval_id=record["id"], state=state)


Step = Literal["run", "hold"]


def approval_step(*, approver: str | None, simulated: SimulatedApproval | None, sandbox: bool,
                  ticket: ApprovalTicket | None, digest: str | None) -> tuple[Step | E.NorthstarError, dict[str, Any]]:
    """What to do with an allowed call: ``run``, ``hold``, or an error (a simulated outcome);
    and the approval gate's trace entry. ``approver`` is None for a scope needing no approval;
    the sandbox never holds a call, it simulates (``simulated``, default ``pending``)."""
    if sandbox and (approver is not None or simulated is not None):
        return _simulate(simulated or "pending")
    if approver is None:
        return "run", {"gate": "approval", "decision": "allow", "code": "ok", "reason": "no approval required"}
    if ticket is not None and ticket.args_hash == digest:
        return "run", {"gate": "approval", "decision": "allow", "code": "approved",
                       "reason": f"approval {ticket.approval_id}"}
    return "hold", {"gate": "approval", "decision": "hold", "code": "approval_pending",
                    "reason": f"scope requires approval by a holder of {approver}"}


def _simulate(outcome: SimulatedApproval) -> tuple[Step | E.NorthstarError, dict[str, Any]]:
    trace = {"gate": "approval", "simulated": outcome}
    if outcome == "approved":
        return "run", {**trace, "decision": "allow", "code": "approved", "reason": "simulated approval"}
    err: E.NorthstarError = (E.ApprovalRejected("simulated rejection", simulated=True) if outcome == "rejected"
                             else E.ApprovalPending("the call would be held for approval", simulated=True))
    return err, {**trace, "decision": "deny", "code": err.code, "reason": err.message}
