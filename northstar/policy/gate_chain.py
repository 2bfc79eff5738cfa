"""The gate chain actor: every tool call, from every door, passes through here.

For a :class:`CallTool` message the actor gathers the facts (catalogue lookup, firearm
bindings and grants, limit state, audit health), runs the pure gates of
:mod:`northstar.policy.gates` in order, writes the audit record(s), and only on allow
invokes the tool actor, with a timeout capped by a hard maximum. A denied call never
reaches a tool. Cancellation of the caller cancels the tool's work and is audited.
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

    async def handle(self, msg: CallTool) -> CallResult:
        match msg:
            case CallTool():
                return await self.call(msg)
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
        if not self.audit.healthy:
            raise E.AuditUnavailable(retry_after=1)
        res = msg.resolved or self.catalog.resolve(msg.name)
        facts = self.facts(msg, res)
        verdict, trace = evaluate(facts)
        trace_dicts = [v.to_trace() for v in trace]
        target = target_of(res, facts.firearm)
        base = R.base_record(msg.ctx, msg.name)
        if not verdict.allowed:
            return await self.denied(base, verdict, target, trace_dicts)
        assert res is not None
        return await self.allowed(msg, res, verdict, base, target, trace_dicts)

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
    ) -> CallResult:
        decision = R.decision_record(
            base, allowed=True, gate="all", code="ok", reason="", target=target, trace=trace
        )
        read_only = res.op.annotations.read_only
        decision_seq = None if read_only else (await self.audit.append(decision)).seq
        principal = msg.ctx.principal
        self.limits.acquire(principal, trio.current_time())
        started = trio.current_time()
        outcome: str = "cancelled"
        error_code: str | None = "cancelled"
        result: CallResult | None = None
        seq: int | None = None
        try:
            result = await self.invoke(msg, res, verdict.validated)
            outcome = "ok" if result.ok else ("timeout" if isinstance(result.error, E.ToolTimeout) else "error")
            error_code = result.error.code if result.error else None
        finally:
            self.limits.release(principal)
            latency_ms = (trio.current_time() - started) * 1000.0
            fields = R.outcome_fields(outcome, latency_ms, error_code)
            with trio.CancelScope(shield=True), trio.move_on_after(AUDIT_SHIELD_S):
                if read_only:
                    seq = (await self.audit.append({**decision, **fields})).seq
                else:
                    seq = (await self.audit.append(R.outcome_record(base, target, decision_seq, **fields))).seq
        assert result is not None
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
