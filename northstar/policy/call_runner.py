"""Running the gate chain's decision in the caller's task: the audit records, the tool, the outcome.

:meth:`CallRunner.run` dispatches on the :data:`~northstar.policy.calls.Decision` with
``match``. A refusal answers at once; a denial is appended to the audit log, then answered;
an allowed call is recorded around the tool call:

* a read-only call writes ONE record after it ran (decision + outcome);
* any other call, and any call while the audit log is recovering (a probe), commits its
  decision before the tool runs, so nothing happens without a durable record of its
  permission, then an ``outcome`` record after.

Its limit slot goes back to the :class:`~northstar.policy.admission.Admission` ledger whatever
happens. Cancelling the caller cancels the tool's work, and the outcome ``cancelled`` is still
recorded (shielded, bounded). Failures are answers (a :class:`CallResult` with the error),
never exceptions, except cancellation itself.

An operation wrapping an upstream MCP server's tool (``op.upstream``) is not sent to a tool
actor: the runner calls the upstream's handle directly, in the caller's task (no extra task
or hop), with the approved pin, the call's timeout and the door's progress sink; cancelling
the caller sends ``notifications/cancelled`` upstream. A sandbox call never causes an upstream
side effect (:meth:`CallRunner.sandbox_port`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio
from opentelemetry.trace import SpanKind

import actors
from northstar.common import errors as E
from northstar.common import phases
from northstar.common.telemetry import Meters, Tracing, recorded
from northstar.mcp_gateway.tools.actor import Invoke
from northstar.mcp_gateway.tools.model import ToolContext, UpstreamOp, UpstreamPort
from northstar.policy import audit_records as R
from northstar.policy.admission import Admission
from northstar.policy.calls import (
    Allowed,
    CallResult,
    CallTool,
    Decision,
    Denied,
    Held,
    Refused,
    Unavailable,
    seen_seq,
)
from northstar.policy.gates import deny
from northstar.policy.shared_limits import NO_SLOT, SharedLimits, Slot
from northstar.storage.base import AuditLog

log = logging.getLogger("northstar.gate_chain")
AUDIT_SHIELD_S = 10.0
UPSTREAM_IS_ERROR = "upstream_is_error"  # the audit code of an upstream tool's own isError result


class CallRunner:
    def __init__(self, audit: AuditLog, admission: Admission, *, tool_timeout_s: float = 30.0,
                 tool_timeout_max_s: float = 120.0, approvals: Any = None, tracing: Tracing | None = None,
                 meters: Meters | None = None, shared: SharedLimits | None = None) -> None:
        self.audit = audit
        self.approvals = approvals  # the ApprovalDesk that consumes an approved call's approval
        self.admission = admission
        self.shared = shared or SharedLimits()
        self.tool_timeout_s = tool_timeout_s
        self.tool_timeout_max_s = tool_timeout_max_s
        self.tracing = tracing if tracing is not None else Tracing()
        self.meters = meters

    async def run(self, decision: Decision) -> CallResult:
        probe = not isinstance(decision, Refused | Held) and decision.probe
        if self.meters is not None:
            self.meters.decided(*decision_labels(decision))
        try:
            match decision:
                case Refused():
                    return self.refused(decision.error)
                case Unavailable():
                    return await self.unavailable(decision)
                case Denied():
                    return await self.denied(decision)
                case Allowed():
                    return await self.allowed(decision)
                case Held():  # the gateway waits for held calls; a runner alone cannot
                    return CallResult(ok=False, error=E.ApprovalPending("the call is held for approval"),
                                      trace=decision.trace, target=decision.target)
        except E.NorthstarError as err:
            return self.refused(err)
        finally:
            if probe:
                self.admission.probe_done(trio.current_time())
        raise TypeError(f"not a decision: {decision!r}")

    def refused(self, err: E.NorthstarError) -> CallResult:
        if isinstance(err, E.AuditUnavailable):
            self.admission.audit_failed(trio.current_time())
        return CallResult(ok=False, error=err)

    async def unavailable(self, d: Unavailable) -> CallResult:
        trace = [{"gate": "firearm", "decision": "deny", "code": d.error.code, "reason": d.error.message}]
        record = R.decision_record(d.base, allowed=False, gate="firearm", code=d.error.code, reason=d.error.message,
                                   target=d.target, trace=trace)
        entry = await self.audit.append(record)
        return CallResult(ok=False, error=d.error, audit_seq=seen_seq(d.call.ctx, entry), trace=trace, target=d.target)

    async def denied(self, d: Denied) -> CallResult:
        record = R.decision_record(d.base, allowed=False, gate=d.verdict.gate, code=d.verdict.code,
                                   reason=d.verdict.reason, target=d.target, trace=d.trace)
        entry = await self.audit.append(record)
        return CallResult(ok=False, error=d.verdict.error, audit_seq=seen_seq(d.call.ctx, entry), trace=d.trace,
                          target=d.target)

    async def allowed(self, d: Allowed) -> CallResult:
        """Run an allowed call (its limit slot already taken) and give the slot back."""
        # An allow passed every gate; its trace says nothing the decision does not.
        decision = R.decision_record(d.base, allowed=True, gate="all", code="ok", reason="", target=d.target,
                                     trace=None)
        combined = d.resolved.op.annotations.read_only and not d.probe
        slot = NO_SLOT
        try:
            if self.shared.backend != "local":
                taken = await self.shared_admit(d)
                if isinstance(taken, Denied):
                    return await self.denied(taken)
                slot = taken
            # An approval is used once, after every limit passed and before the call runs (a lost
            # race refuses it): a call the limits turn away keeps its approval for the retry.
            if d.call.approval is not None:
                if self.approvals is None:
                    raise E.ServiceUnavailable("approvals are not available here", retry_after=1)
                await self.approvals.consume(d.call.ctx, d.call.approval)
            decision_entry = None if combined else await self.audit.append(decision)
            return await self.run_and_record(d, decision, decision_entry)
        finally:
            self.admission.give_back(d.call.ctx.principal)
            await self.shared.give_back(slot)

    async def shared_admit(self, d: Allowed) -> Slot | Denied:
        """The limits every replica shares (Redis): a slot, or the call turned into a denial."""
        limits = self.admission.limits
        taken = await self.shared.admit(d.call.ctx.principal, rate=limits.rate, burst=int(limits.burst),
                                        max_in_flight=limits.max_in_flight)
        if isinstance(taken, Slot):
            return taken
        verdict = deny("limits", taken)
        trace = [*(t for t in d.trace if t.get("gate") != "limits"), verdict.to_trace()]
        return Denied(d.call, d.base, d.target, verdict, trace, d.probe)

    async def run_and_record(self, d: Allowed, decision: dict[str, Any], decision_entry: Any) -> CallResult:
        ctx = d.call.ctx
        combined = decision_entry is None
        started = trio.current_time()
        outcome, error_code = "cancelled", "cancelled"
        result: CallResult | None = None
        seq: int | None = None
        audit_error: E.NorthstarError | None = None
        try:
            result = await self.invoke(d)
            phases.mark("ran")
            outcome = "ok" if result.ok else ("timeout" if isinstance(result.error, E.ToolTimeout) else "error")
            error_code = result.error.code if result.error else None  # type: ignore[assignment]
            if result.mcp is not None and result.mcp.get("isError"):  # the upstream tool said it failed
                outcome, error_code = "error", UPSTREAM_IS_ERROR
        finally:
            latency_ms = (trio.current_time() - started) * 1000.0
            fields = R.outcome_fields(outcome, latency_ms, error_code)
            if result is not None and result.upstream is not None:
                fields["upstream_contacted"] = result.upstream.get("contacted")
            record = ({**decision, **fields} if combined
                      else R.outcome_record(d.base, d.target, decision_entry, **fields))
            # Never raise from here: an exception (Cancelled) may already be on its way out.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + AUDIT_SHIELD_S):
                try:
                    seq = seen_seq(ctx, await self.audit.append(record))
                    phases.mark("recorded")
                except E.AuditUnavailable as err:
                    audit_error = err
        assert result is not None
        if seq is None:
            if combined:
                # The call's only record (its decision) is not known to be committed: withhold
                # the result. A read changed nothing, so refusing it is safe.
                return CallResult(ok=False, error=audit_error or E.AuditUnavailable(retry_after=1), trace=d.trace,
                                  target=d.target)
            # The decision was committed before the tool ran and the tool's effect happened; an
            # error now would invite a retry that repeats it. Report the result, log the gap.
            log.error("outcome record not committed", extra={"request_id": ctx.request_id,
                                                              "decision_seq": decision_entry.seq})
            seq = seen_seq(ctx, decision_entry)
        return CallResult(ok=result.ok, output=result.output, error=result.error, audit_seq=seq, trace=d.trace,
                          target=d.target, latency_ms=latency_ms, mcp=result.mcp, upstream=result.upstream)

    def timeout_for(self, call: CallTool) -> float:
        wanted = call.timeout_s if call.timeout_s and math.isfinite(call.timeout_s) else self.tool_timeout_s
        return max(0.001, min(wanted, self.tool_timeout_max_s))

    async def invoke(self, d: Allowed) -> CallResult:
        if not self.tracing.enabled:
            return await self.invoke_untraced(d)
        upstream = d.resolved.op.upstream
        name = "northstar.tool.call" if upstream is None else "northstar.upstream.call"
        kind = SpanKind.INTERNAL if upstream is None else SpanKind.CLIENT
        attributes = {"northstar.tool": d.resolved.tool.tool_id, "northstar.operation": d.resolved.op.name}
        if upstream is not None:
            attributes.update({"northstar.upstream": upstream.upstream, "northstar.upstream_tool": upstream.tool})
        with self.tracing.span(name, kind, attributes) as span, recorded(span):
            result = await self.invoke_untraced(d)
            span.set_attribute("northstar.outcome", "ok" if result.ok else "error")
            if result.error is not None:
                span.set_attribute("northstar.error_code", result.error.code)
            return result

    async def invoke_untraced(self, d: Allowed) -> CallResult:
        call, res = d.call, d.resolved
        if res.op.upstream is not None:
            return await self.invoke_upstream(d, res.op.upstream)
        services = call.services if call.services is not None else res.services
        tctx = ToolContext(request=call.ctx, services=services, package=None)
        timeout = self.timeout_for(call)
        try:
            reply = await res.ref.call(Invoke(tctx, res.op.name, d.verdict.validated), timeout=timeout)
        except actors.CallTimeout:
            return CallResult(ok=False, error=E.ToolTimeout(timeout_s=timeout))
        except actors.ActorCrashed as crash:
            # The caller gets a clean tool_failed; the operator gets the crash, once per call.
            log.error("tool crashed", extra={"request_id": call.ctx.request_id, "tool": res.tool.tool_id,
                                             "operation": res.op.name, "error": str(crash)})
            return CallResult(ok=False, error=E.ToolFailed("the tool crashed while handling the call"))
        except (actors.ActorStopped, actors.Busy):
            return CallResult(ok=False, error=E.ServiceUnavailable("the tool is not available", retry_after=1))
        if reply.error is not None:
            return CallResult(ok=False, error=reply.error)
        return CallResult(ok=True, output=reply.output.model_dump(mode="json"))


    async def invoke_upstream(self, d: Allowed, up: UpstreamOp) -> CallResult:
        """Call an upstream tool through its handle, in this task (cancellation reaches it)."""
        call = d.call
        arguments: dict[str, Any] = d.verdict.validated or {}
        if up.directory is None:
            return CallResult(ok=False, error=E.UpstreamUnavailable(f"upstream {up.upstream} is not available here",
                                                                    upstream=up.upstream, retry_after=1))
        if call.ctx.sandbox:
            port, contacted = self.sandbox_port(d, up)
            if port is None:  # the validated call it would have made; nothing is sent anywhere
                info = {"contacted": "none", "name": up.upstream, "tool": up.tool}
                output = {"upstream": up.upstream, "tool": up.tool, "arguments": arguments}
                return CallResult(ok=True, output=output, upstream=info)
        else:
            port, contacted = up.directory.port(up.upstream), "live"
        if (drifted := up.directory.shared_drift(up.upstream, up.tool, up.pin)) is not None:
            # Another replica's connection shows this tool changed: refused here too.
            return CallResult(ok=False, error=drifted, upstream={"contacted": "none", "name": up.upstream,
                                                                 "tool": up.tool})
        if port is None:
            return CallResult(ok=False, error=E.UpstreamUnavailable(f"upstream {up.upstream} is not running",
                                                                    upstream=up.upstream, retry_after=1))
        info = {"contacted": contacted, "name": up.upstream, "tool": up.tool}
        # The upstream's max_concurrency holds for every replica together (each has its own
        # connection, each limited to it alone): a place on the shared engine first.
        slot = await self.shared.take(f"upstream:{up.upstream}", port.max_concurrency,
                                      lease_s=self.timeout_for(call) + 30.0)
        if isinstance(slot, E.NorthstarError):
            if isinstance(slot, E.RateLimited):
                slot = E.UpstreamUnavailable(f"upstream {up.upstream}: its max_concurrency is in use on the replicas",
                                             upstream=up.upstream, retry_after=1)
            return CallResult(ok=False, error=slot, upstream={**info, "contacted": "none"})
        try:
            reply = await port.call_inline(up.tool, arguments, pin=up.pin, timeout_s=self.timeout_for(call),
                                           progress=call.progress, request_id=call.ctx.request_id)
        finally:
            await self.shared.give_back(slot)
        if reply.error is not None:
            return CallResult(ok=False, error=reply.error, upstream=info)
        wire = reply.result or {}
        structured = wire.get("structuredContent")
        return CallResult(ok=True, output=structured if isinstance(structured, dict) else None, mcp=wire,
                          upstream=info)

    @staticmethod
    def sandbox_port(d: Allowed, up: UpstreamOp) -> tuple[UpstreamPort | None, str]:
        """Where a sandbox call goes: a read-only operation to the live upstream, any other to
        the upstream's declared sandbox target, else nowhere (``contacted: none``)."""
        assert up.directory is not None
        if d.resolved.op.annotations.read_only:
            return up.directory.port(up.upstream), "live"
        port = up.directory.sandbox_port(up.upstream)
        return (port, "sandbox") if port is not None else (None, "none")


def decision_labels(decision: Decision) -> tuple[str, str]:
    """(outcome, gate) of a decision, for the gate decision counter (closed sets both)."""
    match decision:
        case Allowed():
            return "allowed", "all"
        case Denied():
            return "denied", decision.verdict.gate
        case Unavailable():
            return "unavailable", "firearm"
        case Held():
            return "held", "approval"
    return "refused", "none"
