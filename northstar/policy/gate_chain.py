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
from northstar.mcp_gateway.catalog import Catalog, Resolved
from northstar.mcp_gateway.tools.actor import Invoke
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
class CallResult:
    ok: bool
    output: dict[str, Any] | None = None
    error: E.NorthstarError | None = None
    audit_seq: int | None = None
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


class GateChain(actors.Actor[CallTool, CallResult]):
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

    async def handle(self, msg: CallTool) -> CallResult:
        match msg:
            case CallTool():
                try:
                    return await self.call(msg)
                except E.NorthstarError as err:
                    # A refusal (audit or policy store unavailable, ...) is an answer to this
                    # caller. Raised out of handle() it would crash the actor and cancel every
                    # other in-flight call, and enough of them escalate to the root supervisor.
                    if isinstance(err, E.AuditUnavailable) and self._next_probe_at is None:
                        self._next_probe_at = trio.current_time() + self.config.audit_probe_interval_s
                    return CallResult(ok=False, error=err)
        raise TypeError(f"unexpected message {msg!r}")

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
    async def call(self, msg: CallTool) -> CallResult:
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
                raise E.AuditUnavailable(retry_after=max(1, math.ceil(self._next_probe_at - now)))
            probe = self._probing = True
        else:
            self._next_probe_at = None
        try:
            return await self._call(msg, audit_first=probe)
        finally:
            if probe:
                self._probing = False
                self._next_probe_at = trio.current_time() + self.config.audit_probe_interval_s

    async def _call(self, msg: CallTool, *, audit_first: bool) -> CallResult:
        res = msg.resolved or self.catalog.resolve(msg.name)
        base = R.base_record(msg.ctx, msg.name)
        try:
            facts = self.facts(msg, res)
        except E.ServiceUnavailable as err:  # the policy snapshot is stale: refuse, and say so
            return await self.unavailable(base, err, target_of(res, None))
        verdict, trace = evaluate(facts)
        trace_dicts = [v.to_trace() for v in trace]
        target = target_of(res, facts.firearm)
        if not verdict.allowed:
            return await self.denied(base, verdict, target, trace_dicts)
        assert res is not None
        return await self.allowed(msg, res, verdict, base, target, trace_dicts, audit_first=audit_first)

    async def unavailable(self, base: dict[str, Any], err: E.NorthstarError, target: dict[str, Any]) -> CallResult:
        trace = [{"gate": "firearm", "decision": "deny", "code": err.code, "reason": err.message}]
        record = R.decision_record(
            base, allowed=False, gate="firearm", code=err.code, reason=err.message, target=target, trace=trace
        )
        entry = await self.audit.append(record)
        return CallResult(ok=False, error=err, audit_seq=entry.seq, trace=trace, target=target)

    async def denied(
        self, base: dict[str, Any], verdict: Verdict, target: dict[str, Any], trace: list[dict[str, Any]]
    ) -> CallResult:
        record = R.decision_record(
            base, allowed=False, gate=verdict.gate, code=verdict.code, reason=verdict.reason,
            target=target, trace=trace,
        )
        entry = await self.audit.append(record)
        return CallResult(ok=False, error=verdict.error, audit_seq=entry.seq, trace=trace, target=target)

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
        # An allow passed every gate; its trace says nothing the decision does not.
        decision = R.decision_record(base, allowed=True, gate="all", code="ok", reason="", target=target, trace=None)
        # A read-only call normally writes ONE record after it ran (decision + outcome). Any
        # other call, and any call while the audit log is recovering, commits its decision
        # before the tool runs, so nothing happens without a durable record of its permission.
        combined = res.op.annotations.read_only and not audit_first
        principal = msg.ctx.principal
        # Take the limit slot now, with no await since the gates ran, so concurrent calls
        # cannot all pass the same in-flight / rate check.
        self.limits.acquire(principal, trio.current_time())
        try:
            decision_seq = None if combined else (await self.audit.append(decision)).seq
            return await self.run_and_record(msg, res, verdict, base, target, trace, decision, decision_seq)
        finally:
            self.limits.release(principal)

    async def run_and_record(
        self,
        msg: CallTool,
        res: Resolved,
        verdict: Verdict,
        base: dict[str, Any],
        target: dict[str, Any],
        trace: list[dict[str, Any]],
        decision: dict[str, Any],
        decision_seq: int | None,
    ) -> CallResult:
        combined = decision_seq is None
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
            record = {**decision, **fields} if combined else R.outcome_record(base, target, decision_seq, **fields)
            # Never raise from here: an exception (Cancelled) may already be on its way out.
            with trio.CancelScope(shield=True), trio.move_on_after(AUDIT_SHIELD_S):
                try:
                    seq = (await self.audit.append(record)).seq
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
                                                              "decision_seq": decision_seq})
            seq = decision_seq
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
        except actors.ActorCrashed:
            return CallResult(ok=False, error=E.ToolFailed("the tool crashed while handling the call"))
        except (actors.ActorStopped, actors.Busy):
            return CallResult(ok=False, error=E.ServiceUnavailable("the tool is not available", retry_after=1))
        if reply.error is not None:
            return CallResult(ok=False, error=reply.error)
        return CallResult(ok=True, output=reply.output.model_dump(mode="json"))
