"""The gate chain actor: every tool call, from every door, passes through here.

For a :class:`CallTool` message the actor gathers the facts (catalogue lookup, firearm
bindings and grants, limit state, audit health), runs the pure gates of
:mod:`northstar.policy.gates` in order, writes the audit record(s), and only on allow
invokes the tool actor, with a timeout capped by a hard maximum. A denied call never
reaches a tool. Cancellation of the caller cancels the tool's work and is audited.

Failing closed: when the audit log cannot commit, or the policy snapshot is stale, the call
is refused (503 ``audit_unavailable`` / ``policy_unavailable``, with Retry-After), never
allowed. Refusals are *answers* (a :class:`CallResult` with the error), never exceptions out
of :meth:`GateChain.handle`, which would crash the actor and cancel every call in flight.
Deciding and running are split so the hot path spawns no task: a :class:`Decide` message is
answered by the actor inline, in arrival order (``answer_now``: gather facts, run the gates,
take the limit slot), with a :class:`Ticket`; the caller's own task then runs the ticket
(audit records, the tool call, the outcome). :meth:`Gateway.call_tool` does exactly that; a
:class:`CallTool` message does both inside the actor, for callers that want one round trip.

While the audit log is unhealthy one call at a time, at most one per
``audit_probe_interval_s``, is let through as a probe that commits its decision before
anything runs; its success is what brings the gateway back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import trio

import actors
from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.mcp_gateway.tools.actor import Invoke
from northstar.mcp_gateway.tools.catalog import Catalog, Resolved
from northstar.mcp_gateway.tools.model import ToolContext
from northstar.policy import audit_records as R
from northstar.policy.gates import CallFacts, MockPolicy, Verdict, evaluate
from northstar.policy.limits import PrincipalLimits

log = logging.getLogger("northstar.gate_chain")
AUDIT_SHIELD_S = 10.0


@dataclass(frozen=True, slots=True)
class CallTool:
    ctx: RequestContext
    name: str
    arguments: dict[str, Any] | None
    mock: MockPolicy | None = None
    services: Any = None
    timeout_s: float | None = None
    resolved: Resolved | None = None


@dataclass(frozen=True, slots=True)
class Decide:
    """Decide ``call`` only; the reply is a :class:`Ticket` for the caller to run."""

    call: CallTool


def seen_seq(ctx: RequestContext, entry: Any) -> int:
    """The number of a call's audit record as its caller may see it.

    Admins see the global ``seq``; anyone else the record's ``tenant_seq`` (its place among
    their tenant's records), which says nothing about other tenants' traffic.
    """
    if ctx.is_admin or entry.tenant_seq is None:
        return int(entry.seq)
    return int(entry.tenant_seq)


@dataclass(frozen=True, slots=True)
class CallResult:
    ok: bool
    output: dict[str, Any] | None = None
    error: E.NorthstarError | None = None
    audit_seq: int | None = None  # as the caller may see it (see seen_seq)
    trace: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None


@dataclass(slots=True)
class GateChainConfig:
    tool_timeout_s: float = 30.0
    tool_timeout_max_s: float = 120.0
    max_in_flight: int = 64
    rate_per_s: float = 200.0
    burst: int = 400
    audit_probe_interval_s: float = 1.0


def target_of(res: Resolved | None, firearm: str | None) -> dict[str, Any]:
    if res is None:
        return {"tool": None, "operation": None, "scope": None, "firearm": None}
    return {
        "tool": res.tool.tool_id,
        "operation": res.op.name,
        "canonical_name": res.canonical,
        "scope": res.scope.name,
        "firearm": firearm,
        "tool_version": res.tool.version,
        "package_hash": res.tool.package_hash,
        "read_only": res.op.annotations.read_only,
    }


REFUSED, UNAVAILABLE, DENIED, ALLOWED = "refused", "unavailable", "denied", "allowed"


class Ticket:
    """The gate chain's decision on one call, run by the caller's task.

    ``refused``: nothing recorded (the audit log is down), the refusal is the answer.
    ``unavailable`` / ``denied``: the decision record is appended, the refusal answered.
    ``allowed``: the limit slot is already held; the decision and outcome are recorded around
    the tool call as :meth:`GateChain.allowed` describes, and the slot is given back.
    A ticket is run once; cancelling its runner cancels the tool's work, and the outcome
    ``cancelled`` is still recorded.
    """

    __slots__ = ("base", "chain", "error", "kind", "msg", "probe", "res", "target", "trace", "verdict")

    def __init__(self, chain: GateChain, msg: CallTool, kind: str, *, res: Resolved | None = None,
                 base: dict[str, Any] | None = None, target: dict[str, Any] | None = None,
                 trace: list[dict[str, Any]] | None = None, verdict: Verdict | None = None,
                 error: E.NorthstarError | None = None, probe: bool = False) -> None:
        self.chain, self.msg, self.kind, self.res, self.base = chain, msg, kind, res, base
        self.target, self.trace, self.verdict, self.error, self.probe = target, trace, verdict, error, probe

    @property
    def allowed(self) -> bool:
        return self.kind == ALLOWED

    async def run(self) -> CallResult:
        chain = self.chain
        try:
            if self.kind == REFUSED:
                assert self.error is not None
                return chain.refused(self.error)
            assert self.base is not None and self.target is not None
            if self.kind == UNAVAILABLE:
                assert self.error is not None
                return await chain.unavailable(self.msg.ctx, self.base, self.error, self.target)
            assert self.verdict is not None and self.trace is not None
            if self.kind == DENIED:
                return await chain.denied(self.msg.ctx, self.base, self.verdict, self.target, self.trace)
            assert self.res is not None
            return await chain.allowed(self.msg, self.res, self.verdict, self.base, self.target, self.trace,
                                       audit_first=self.probe)
        except E.NorthstarError as err:
            return chain.refused(err)
        finally:
            if self.probe:
                chain.probe_done()


class GateChain(actors.Actor[CallTool | Decide, CallResult | Ticket]):
    name = "gate_chain"
    max_concurrency = 4096

    def __init__(self, catalog: Catalog, firearms: Any, audit: Any, config: GateChainConfig) -> None:
        self.catalog = catalog
        self.firearms = firearms
        self.audit = audit
        self.config = config
        self.limits = PrincipalLimits(
            rate=config.rate_per_s, burst=config.burst, max_in_flight=config.max_in_flight
        )
        self._probing = False
        self._next_probe_at: float | None = None

    def answer_now(self, msg: CallTool | Decide) -> CallResult | Ticket | actors.NotNow:
        if isinstance(msg, Decide):
            return self.decide(msg.call)
        return actors.NOT_NOW

    async def handle(self, msg: CallTool | Decide) -> CallResult | Ticket:
        match msg:
            case CallTool():
                return await self.decide(msg).run()
            case Decide():
                return self.decide(msg.call)
        raise TypeError(f"unexpected message {msg!r}")

    def refused(self, err: E.NorthstarError) -> CallResult:
        """A refusal (audit or policy store unavailable, ...) is an answer to this caller.

        Raised out of the actor it would crash it and cancel every other in-flight call, and
        enough of them would escalate to the root supervisor.
        """
        if isinstance(err, E.AuditUnavailable) and self._next_probe_at is None:
            self._next_probe_at = trio.current_time() + self.config.audit_probe_interval_s
        return CallResult(ok=False, error=err)

    def probe_done(self) -> None:
        self._probing = False
        self._next_probe_at = trio.current_time() + self.config.audit_probe_interval_s

    # -- facts ----------------------------------------------------------------------------
    def facts(self, msg: CallTool, res: Resolved | None) -> CallFacts:
        ctx, now = msg.ctx, trio.current_time()
        firearm, granted = None, frozenset[str]()
        if res is not None:
            decision = self.firearms.check_access(ctx, res.scope.name)
            firearm, granted = decision.firearm, decision.granted
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
            in_flight=self.limits.in_flight.get(principal, 0),
            max_in_flight=self.limits.max_in_flight,
            rate_retry_after=self.limits.bucket(principal, now).retry_after(now),
            mock=msg.mock,
        )

    # -- the call -------------------------------------------------------------------------
    def decide(self, msg: CallTool) -> Ticket:
        """The decision on ``msg``, made now, with no await: what the caller must run next."""
        probe = False
        if not self.audit.healthy:
            # Fail closed, but let one call through as a probe, at most one at a time and one
            # per ``audit_probe_interval_s`` (the Retry-After we answer): it commits its decision
            # record before anything runs, and its success is what turns the audit log healthy
            # again. Without probes nothing would ever be appended, and the gateway would
            # refuse every call until restarted.
            now = trio.current_time()
            if self._next_probe_at is None:  # it failed elsewhere (e.g. a policy record)
                self._next_probe_at = now + self.config.audit_probe_interval_s
            if self._probing or now < self._next_probe_at:
                err = E.AuditUnavailable(retry_after=max(1, math.ceil(self._next_probe_at - now)))
                return Ticket(self, msg, REFUSED, error=err)
            probe = self._probing = True
        else:
            self._next_probe_at = None
        res = msg.resolved or self.catalog.resolve(msg.name)
        base = R.base_record(msg.ctx, msg.name)
        try:
            facts = self.facts(msg, res)
        except E.ServiceUnavailable as err:  # the policy snapshot is stale: refuse, and say so
            return Ticket(self, msg, UNAVAILABLE, res=res, base=base, target=target_of(res, None), error=err,
                          probe=probe)
        verdict, trace = evaluate(facts)
        trace_dicts = [v.to_trace() for v in trace]
        target = target_of(res, facts.firearm)
        if not verdict.allowed:
            return Ticket(self, msg, DENIED, res=res, base=base, target=target, trace=trace_dicts,
                          verdict=verdict, probe=probe)
        # Take the limit slot now, in the same step as the gates, so concurrent calls cannot
        # all pass the same in-flight / rate check; the ticket gives it back when it has run.
        self.limits.acquire(msg.ctx.principal, trio.current_time())
        return Ticket(self, msg, ALLOWED, res=res, base=base, target=target, trace=trace_dicts, verdict=verdict,
                      probe=probe)

    async def unavailable(self, ctx: RequestContext, base: dict[str, Any], err: E.NorthstarError,
                          target: dict[str, Any]) -> CallResult:
        trace = [{"gate": "firearm", "decision": "deny", "code": err.code, "reason": err.message}]
        record = R.decision_record(
            base, allowed=False, gate="firearm", code=err.code, reason=err.message, target=target, trace=trace
        )
        entry = await self.audit.append(record)
        return CallResult(ok=False, error=err, audit_seq=seen_seq(ctx, entry), trace=trace, target=target)

    async def denied(
        self, ctx: RequestContext, base: dict[str, Any], verdict: Verdict, target: dict[str, Any],
        trace: list[dict[str, Any]],
    ) -> CallResult:
        record = R.decision_record(
            base, allowed=False, gate=verdict.gate, code=verdict.code, reason=verdict.reason,
            target=target, trace=trace,
        )
        entry = await self.audit.append(record)
        return CallResult(ok=False, error=verdict.error, audit_seq=seen_seq(ctx, entry), trace=trace, target=target)

    async def allowed(
        self,
        msg: CallTool,
        res: Resolved,
        verdict: Verdict,
        base: dict[str, Any],
        target: dict[str, Any],
        trace: list[dict[str, Any]],
        *,
        audit_first: bool = False,
    ) -> CallResult:
        """Run an allowed call (its limit slot already taken) and give the slot back."""
        # An allow passed every gate; its trace says nothing the decision does not.
        decision = R.decision_record(base, allowed=True, gate="all", code="ok", reason="", target=target, trace=None)
        # A read-only call normally writes ONE record after it ran (decision + outcome). Any
        # other call, and any call while the audit log is recovering, commits its decision
        # before the tool runs, so nothing happens without a durable record of its permission.
        combined = res.op.annotations.read_only and not audit_first
        try:
            decision_entry = None if combined else await self.audit.append(decision)
            return await self.run_and_record(msg, res, verdict, base, target, trace, decision, decision_entry)
        finally:
            self.limits.release(msg.ctx.principal)

    async def run_and_record(
        self,
        msg: CallTool,
        res: Resolved,
        verdict: Verdict,
        base: dict[str, Any],
        target: dict[str, Any],
        trace: list[dict[str, Any]],
        decision: dict[str, Any],
        decision_entry: Any,
    ) -> CallResult:
        combined = decision_entry is None
        started = trio.current_time()
        outcome: str = "cancelled"
        error_code: str | None = "cancelled"
        result: CallResult | None = None
        seq: int | None = None
        audit_error: E.NorthstarError | None = None
        try:
            result = await self.invoke(msg, res, verdict.validated)
            outcome = "ok" if result.ok else ("timeout" if isinstance(result.error, E.ToolTimeout) else "error")
            error_code = result.error.code if result.error else None
        finally:
            latency_ms = (trio.current_time() - started) * 1000.0
            fields = R.outcome_fields(outcome, latency_ms, error_code)
            record = {**decision, **fields} if combined else R.outcome_record(base, target, decision_entry, **fields)
            # Never raise from here: an exception (Cancelled) may already be on its way out.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + AUDIT_SHIELD_S):
                try:
                    seq = seen_seq(msg.ctx, await self.audit.append(record))
                except E.AuditUnavailable as err:
                    audit_error = err
        assert result is not None
        if seq is None:
            if combined:
                # The call's only record (its decision) is not known to be committed: withhold
                # the result. A read changed nothing, so refusing it is safe.
                return CallResult(
                    ok=False, error=audit_error or E.AuditUnavailable(retry_after=1), trace=trace, target=target
                )
            # The decision was committed before the tool ran and the tool's effect happened; an
            # error now would invite a retry that repeats it. Report the result, log the gap.
            log.error("outcome record not committed", extra={"request_id": msg.ctx.request_id,
                                                              "decision_seq": decision_entry.seq})
            seq = seen_seq(msg.ctx, decision_entry)
        return CallResult(
            ok=result.ok, output=result.output, error=result.error, audit_seq=seq, trace=trace, target=target,
            latency_ms=latency_ms,
        )

    def timeout_for(self, msg: CallTool) -> float:
        wanted = msg.timeout_s if msg.timeout_s and math.isfinite(msg.timeout_s) else self.config.tool_timeout_s
        return max(0.001, min(wanted, self.config.tool_timeout_max_s))

    async def invoke(self, msg: CallTool, res: Resolved, validated: Any) -> CallResult:
        services = msg.services if msg.services is not None else res.services
        tctx = ToolContext(request=msg.ctx, services=services, package=None)
        timeout = self.timeout_for(msg)
        try:
            reply = await res.ref.call(Invoke(tctx, res.op.name, validated), timeout=timeout)
        except actors.CallTimeout:
            return CallResult(ok=False, error=E.ToolTimeout(timeout_s=timeout))
        except actors.ActorCrashed as crash:
            # The caller gets a clean tool_failed; the operator gets the crash, once per call.
            log.error("tool crashed", extra={"request_id": msg.ctx.request_id, "tool": res.tool.tool_id,
                                             "operation": res.op.name, "error": str(crash)})
            return CallResult(ok=False, error=E.ToolFailed("the tool crashed while handling the call"))
        except (actors.ActorStopped, actors.Busy):
            return CallResult(ok=False, error=E.ServiceUnavailable("the tool is not available", retry_after=1))
        if reply.error is not None:
            return CallResult(ok=False, error=reply.error)
        return CallResult(ok=True, output=reply.output.model_dump(mode="json"))

