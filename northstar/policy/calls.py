"""The gate chain's messages, its decisions and a call's result: closed sets of frozen types.

A door sends the gate chain actor a :class:`Decide` (or a :class:`CallTool` for one round
trip); the actor answers a :data:`Decision`, one of four frozen types, each carrying exactly
what running it needs:

=============== ==================================================================
:class:`Refused`      nothing is recorded (the audit log is down): the refusal is the answer
:class:`Unavailable`  the policy snapshot is stale: a deny record, then the refusal
:class:`Denied`       a gate said no: a deny record (with the trace), then the refusal
:class:`Allowed`      every gate passed and the limit slot is taken: the call runs
:class:`Held`         every gate passed but the scope requires approval: no slot is taken;
                      the gateway opens (or finds) the approval, waits, and decides again
                      with the approved :class:`~northstar.policy.approval_core.ApprovalTicket`
=============== ==================================================================

A decision is run once, by :class:`~northstar.policy.call_runner.CallRunner`, in the caller's
own task. ``probe`` marks the one call let through while the audit log recovers.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.mcp_gateway.tools.catalog import Resolved
from northstar.mcp_gateway.tools.model import ProgressFn
from northstar.policy.approval_core import ApprovalTicket
from northstar.policy.gates import MockPolicy, Verdict


# -- messages to the gate chain actor ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallTool:
    """One call: who, which tool, the arguments; ``mock``, ``services`` (isolated tool services)
    and ``resolved`` (a tool that is not in the catalogue, e.g. a draft) serve the sandbox;
    ``progress`` receives the progress an upstream tool reports (doors that can relay it).
    ``approval``: the approved approval a held call runs under; ``wait_approval``: whether the
    door waits for a held call's approval (else it answers ``approval_pending`` at once)."""

    ctx: RequestContext
    name: str
    arguments: dict[str, Any] | None
    mock: MockPolicy | None = None
    services: Any = None
    timeout_s: float | None = None
    resolved: Resolved | None = None
    progress: ProgressFn | None = None
    approval: ApprovalTicket | None = None
    wait_approval: bool = True
    abandon: Callable[[], AbstractContextManager[None]] | None = None  # the door cancels a wait inside it


@dataclass(frozen=True, slots=True)
class Decide:
    """Decide ``call`` only; the reply is a :data:`Decision` for the caller to run."""

    call: CallTool


# -- decisions ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Refused:
    call: CallTool
    error: E.NorthstarError


@dataclass(frozen=True, slots=True)
class Unavailable:
    call: CallTool
    base: dict[str, Any]
    target: dict[str, Any]
    error: E.NorthstarError
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Denied:
    call: CallTool
    base: dict[str, Any]
    target: dict[str, Any]
    verdict: Verdict
    trace: list[dict[str, Any]]
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Allowed:
    call: CallTool
    resolved: Resolved
    base: dict[str, Any]
    target: dict[str, Any]
    verdict: Verdict
    trace: list[dict[str, Any]]
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Held:
    call: CallTool
    resolved: Resolved
    base: dict[str, Any]
    target: dict[str, Any]
    trace: list[dict[str, Any]]
    approver: str
    arguments: dict[str, Any]
    args_hash: str
    probe: bool = False


Decision = Refused | Unavailable | Denied | Allowed | Held


# -- the answer to a call -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallResult:
    """A call's answer. ``output``: a built-in tool's output; for an upstream tool its
    ``structuredContent`` (or None). ``mcp``: an upstream tool's MCP result as it answered
    (wire form: ``content``, ``structuredContent``, ``isError``, ...), which the doors pass on
    as is. ``upstream``: for upstream tools, what was contacted (see ``docs/upstreams.md``)."""

    ok: bool
    output: dict[str, Any] | None = None
    error: E.NorthstarError | None = None
    audit_seq: int | None = None  # as the caller may see it (see seen_seq)
    trace: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    mcp: dict[str, Any] | None = None
    upstream: dict[str, Any] | None = None


def seen_seq(ctx: RequestContext, entry: Any) -> int:
    """The number of a call's audit record as its caller may see it.

    Admins see the global ``seq``; anyone else the record's ``tenant_seq`` (its place among
    their tenant's records), which says nothing about other tenants' traffic.
    """
    if ctx.is_admin or entry.tenant_seq is None:
        return int(entry.seq)
    return int(entry.tenant_seq)


def target_of(res: Resolved | None, firearm: str | None) -> dict[str, Any]:
    """What a call's audit records say about its target."""
    if res is None:
        return {"tool": None, "operation": None, "scope": None, "firearm": None}
    target = {
        "tool": res.tool.tool_id,
        "operation": res.op.name,
        "canonical_name": res.canonical,
        "scope": res.scope.name,
        "firearm": firearm,
        "tool_version": res.tool.version,
        "package_hash": res.tool.package_hash,
        "read_only": res.op.annotations.read_only,
    }
    if (up := res.op.upstream) is not None:
        target.update(upstream=up.upstream, upstream_tool=up.tool, upstream_pin=up.pin)
    return target
