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
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio

import actors
from northstar.common import errors as E
from northstar.mcp_gateway.tools.actor import Invoke
from northstar.mcp_gateway.tools.model import ToolContext
from northstar.policy import audit_records as R
from northstar.policy.admission import Admission
from northstar.policy.calls import Allowed, CallResult, CallTool, Decision, Denied, Refused, Unavailable, seen_seq
from northstar.storage.base import AuditLog

log = logging.getLogger("northstar.gate_chain")
AUDIT_SHIELD_S = 10.0


class CallRunner:
    def __init__(self, audit: AuditLog, admission: Admission, *, tool_timeout_s: float = 30.0,
                 tool_timeout_max_s: float = 120.0) -> None:
        self.audit = audit
        self.admission = admission
        self.tool_timeout_s = tool_timeout_s
        self.tool_timeout_max_s = tool_timeout_max_s

    async def run(self, decision: Decision) -> CallResult:
        probe = not isinstance(decision, Refused) and decision.probe
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
        try:
            decision_entry = None if combined else await self.audit.append(decision)
            return await self.run_and_record(d, decision, decision_entry)
        finally:
            self.admission.give_back(d.call.ctx.principal)

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
            outcome = "ok" if result.ok else ("timeout" if isinstance(result.error, E.ToolTimeout) else "error")
            error_code = result.error.code if result.error else None  # type: ignore[assignment]
        finally:
            latency_ms = (trio.current_time() - started) * 1000.0
            fields = R.outcome_fields(outcome, latency_ms, error_code)
            record = ({**decision, **fields} if combined
                      else R.outcome_record(d.base, d.target, decision_entry, **fields))
            # Never raise from here: an exception (Cancelled) may already be on its way out.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + AUDIT_SHIELD_S):
                try:
                    seq = seen_seq(ctx, await self.audit.append(record))
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
                          target=d.target, latency_ms=latency_ms)

    def timeout_for(self, call: CallTool) -> float:
        wanted = call.timeout_s if call.timeout_s and math.isfinite(call.timeout_s) else self.tool_timeout_s
        return max(0.001, min(wanted, self.tool_timeout_max_s))

    async def invoke(self, d: Allowed) -> CallResult:
        call, res = d.call, d.resolved
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

