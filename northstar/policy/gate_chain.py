"""The gate chain actor: every tool call, from every door, is decided here.

For a :class:`~northstar.policy.calls.Decide` message the actor gathers the facts (catalogue
lookup, firearm bindings and grants, limit state, audit health), runs the pure gates of
:mod:`northstar.policy.gates` in order, takes the limit slot on allow, and answers a
:data:`~northstar.policy.calls.Decision`, all in one synchronous step of its serving loop
(``answer_now``: no task, no cancel scope, arrival order kept). The caller's own task then runs
the decision with :class:`~northstar.policy.call_runner.CallRunner` (audit records, the tool
call, the outcome): :meth:`Gateway.call_tool` does exactly that. A
:class:`~northstar.policy.calls.CallTool` message does both inside the actor, for callers that
want one round trip. A denied call never reaches a tool. A call that passed every gate to a scope
that requires human approval is answered :class:`~northstar.policy.calls.Held` (no limit slot
taken, one rate token spent) unless it carries the approved ticket of these exact arguments
(:mod:`northstar.policy.approval_core`); the sandbox simulates the approval instead.

Failing closed: when the audit log cannot commit, or the policy snapshot is stale, the call
is refused (503 ``audit_unavailable`` / ``policy_unavailable``, with Retry-After), never
allowed (see :class:`~northstar.policy.admission.Admission` for the probe that brings the
audit log back). Refusals are *answers*, never exceptions out of the actor, which would crash
it and cancel every call in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

import actors
from northstar.common import errors as E
from northstar.mcp_gateway.tools.catalog import Catalog, Resolved
from northstar.policy import audit_records as R
from northstar.policy.admission import Admission
from northstar.policy.approval_core import approval_step, args_hash, final_arguments
from northstar.policy.call_runner import CallRunner
from northstar.policy.calls import (
    Allowed,
    CallResult,
    CallTool,
    Decide,
    Decision,
    Denied,
    Held,
    Refused,
    Unavailable,
    target_of,
)
from northstar.policy.firearms import FirearmsService
from northstar.policy.gates import CallFacts, Verdict, evaluate
from northstar.policy.limits import PrincipalLimits
from northstar.policy.shared_limits import SharedLimits
from northstar.storage.base import AuditLog


@dataclass(frozen=True, slots=True)
class GateChainConfig:
    tool_timeout_s: float = 30.0
    tool_timeout_max_s: float = 120.0
    max_in_flight: int = 64
    rate_per_s: float = 200.0
    burst: int = 400
    audit_probe_interval_s: float = 1.0


def decision_parts(config: GateChainConfig, audit: AuditLog, approvals: Any = None,
                   shared: SharedLimits | None = None) -> tuple[Admission, CallRunner]:
    """The admission ledger and the runner a gate chain and its gateway share (one per gateway);
    ``approvals`` (an ApprovalDesk) consumes the approval of a held call that runs; ``shared``: the
    limits every replica shares, checked by the runner after the local ones."""
    limits = PrincipalLimits(rate=config.rate_per_s, burst=config.burst, max_in_flight=config.max_in_flight)
    admission = Admission(limits, probe_interval_s=config.audit_probe_interval_s)
    runner = CallRunner(audit, admission, tool_timeout_s=config.tool_timeout_s,
                        tool_timeout_max_s=config.tool_timeout_max_s, approvals=approvals, shared=shared)
    return admission, runner


class GateChain(actors.Actor[CallTool | Decide, CallResult | Decision]):
    name = "gate_chain"
    max_concurrency = 4096

    def __init__(self, catalog: Catalog, firearms: FirearmsService, audit: AuditLog, admission: Admission,
                 runner: CallRunner) -> None:
        self.catalog = catalog
        self.firearms = firearms
        self.audit = audit
        self.admission = admission
        self.runner = runner

    def answer_now(self, msg: CallTool | Decide) -> CallResult | Decision | actors.NotNow:
        if isinstance(msg, Decide):
            return self.decide(msg.call)
        return actors.NOT_NOW

    async def handle(self, msg: CallTool | Decide) -> CallResult | Decision:
        match msg:
            case CallTool():
                return await self.runner.run(self.decide(msg))
            case Decide():
                return self.decide(msg.call)
        raise TypeError(f"unexpected message {msg!r}")

    def facts(self, msg: CallTool, res: Resolved | None) -> CallFacts:
        ctx, now = msg.ctx, trio.current_time()
        firearm, granted = None, frozenset[str]()
        if res is not None:
            access = self.firearms.check_access(ctx, res.scope.name)
            firearm, granted = access.firearm, access.granted
        if msg.mock is not None:
            if res is not None and res.scope.name in msg.mock.bindings:
                firearm = msg.mock.bindings[res.scope.name]
            granted = msg.mock.grants if msg.mock.replace_grants else granted | msg.mock.grants
        principal = ctx.principal
        return CallFacts(
            ctx=ctx,
            name=msg.name,
            arguments=msg.arguments,
            tool=res.tool if res else None,
            scope=res.scope if res else None,
            op=res.op if res else None,
            firearm=firearm,
            granted=granted,
            in_flight=self.admission.in_flight(principal),
            max_in_flight=self.admission.limits.max_in_flight,
            rate_retry_after=self.admission.rate_retry_after(principal, now),
            mock=msg.mock,
        )

    def decide(self, msg: CallTool) -> Decision:
        """The decision on ``msg``, made now, with no await: what the caller must run next."""
        probe = self.admission.audit_gate(self.audit.healthy, trio.current_time())
        if isinstance(probe, E.AuditUnavailable):
            return Refused(msg, probe)
        res = msg.resolved or self.catalog.resolve(msg.name)
        base = R.base_record(msg.ctx, msg.name)
        try:
            facts = self.facts(msg, res)
        except E.ServiceUnavailable as err:  # the policy snapshot is stale: refuse, and say so
            return Unavailable(msg, base, target_of(res, None), err, probe)
        verdict, trace = evaluate(facts)
        trace_dicts = [v.to_trace() for v in trace]
        target = target_of(res, facts.firearm)
        if not verdict.allowed or res is None:
            return Denied(msg, base, target, verdict, trace_dicts, probe)
        held = self.approval(msg, res, base, target, verdict, trace_dicts, probe)
        if held is not None:
            return held
        # Take the limit slot now, in the same step as the gates, so concurrent calls cannot
        # all pass the same in-flight / rate check; the runner gives it back when it has run.
        self.admission.take(msg.ctx.principal, trio.current_time())
        return Allowed(msg, res, base, target, verdict, trace_dicts, probe)

    def approval(self, msg: CallTool, res: Resolved, base: dict[str, Any], target: dict[str, Any],
                 verdict: Verdict, trace: list[dict[str, Any]], probe: bool) -> Held | Denied | None:
        """For a scope that requires approval: hold the call, deny it (a simulated outcome in the
        sandbox), or None to run it (no approval needed, or approved for these exact arguments)."""
        approver = self.firearms.approver_for(res.scope.name)
        simulated = msg.mock.approval if msg.mock is not None else None
        if approver is None and simulated is None:
            return None
        arguments = final_arguments(verdict.validated)
        digest = args_hash(arguments)
        step, entry = approval_step(approver=approver, simulated=simulated,  # type: ignore[arg-type]
                                    sandbox=msg.ctx.sandbox, ticket=msg.approval, digest=digest)
        trace.append(entry)
        if isinstance(step, E.NorthstarError):
            denial = Verdict(gate="approval", allowed=False, code=step.code, reason=step.message, error=step)
            return Denied(msg, base, target, denial, trace, probe)
        if step == "hold":
            # A held call costs a rate token like any call (a flood of held calls is limited),
            # but holds no in-flight slot while it waits: the slot is taken when it runs.
            self.admission.take(msg.ctx.principal, trio.current_time())
            self.admission.give_back(msg.ctx.principal)
            return Held(msg, res, base, target, trace, approver or "", arguments, digest, probe)
        if msg.approval is not None:
            target["approval_id"] = msg.approval.approval_id
        return None
