"""The gateway facade the transports talk to.

Transports (MCP over stdio / SSE / Streamable HTTP, REST, the internal ``tools.call`` API
and the sandbox) never call a tool directly: they send a ``CallTool`` message to the
gate chain actor through :meth:`Gateway.call_tool`. Discovery (``tools/list`` and the REST
inventory) is derived from the catalogue and the firearm bindings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

import trio

import actors
from northstar.common import errors as E
from northstar.common import phases as call_phases
from northstar.common.identity import RequestContext, Transport
from northstar.common.limits import check_timeout
from northstar.common.telemetry import Tracing, call_attributes, in_span, recorded, result_attributes
from northstar.mcp_gateway import schema_gen
from northstar.mcp_gateway.tools.catalog import Catalog, Resolved
from northstar.mcp_gateway.tools.model import ProgressFn
from northstar.policy.approvals import ApprovalDesk
from northstar.policy.call_runner import CallRunner
from northstar.policy.calls import CallResult, CallTool, Decide, Decision, Held
from northstar.policy.firearms import FirearmsService
from northstar.policy.gates import MockPolicy

# How long a call may wait for the gate chain's decision (its mailbox is full under overload).
DECIDE_TIMEOUT_S = 15.0


@dataclass
class Gateway:
    """The facade every door calls: ``call_tool`` (decided by the gate chain actor, run here by
    the :class:`CallRunner`), ``list_tools`` and ``inventory`` (from the catalogue and bindings)."""

    catalog: Catalog
    firearms: FirearmsService
    gate_chain: actors.ActorRef[CallTool | Decide, CallResult | Decision]
    runner: CallRunner
    unauthorized_tools: str = "mark"
    tool_timeout_max_s: float = 120.0
    # Each finished call, with the seconds it took here (decision and run): the metrics.
    on_result: Callable[[RequestContext, CallResult, float], None] | None = None
    approvals: ApprovalDesk | None = None
    tracing: Tracing = field(default_factory=Tracing)
    # Where the calls' time goes (GET /v1/ops/phases): doors open a call's clock, layers mark it.
    phases: call_phases.PhaseStats = field(default_factory=call_phases.PhaseStats)

    async def call_tool(
        self,
        ctx: RequestContext,
        name: str,
        arguments: dict[str, Any] | None,
        *,
        mock: MockPolicy | None = None,
        services: Any = None,
        timeout_s: float | None = None,
        resolved: Resolved | None = None,
        progress: ProgressFn | None = None,
        wait_approval: bool = True,
        abandon: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> CallResult:
        """Run one call through the gate chain. Raises only for service-level failures.

        ``mock`` (a what-if policy), ``services`` (isolated tool services) and ``resolved``
        (a tool that is not in the catalogue, e.g. an unpublished draft) serve the sandbox.
        ``progress`` receives the progress an upstream tool reports (doors that can relay it), and
        a held call's waiting progress. A call to a scope that requires approval is held
        (:mod:`northstar.policy.approvals`): with ``wait_approval`` it waits for the approval and
        then runs, decided again; without, it answers ``approval_pending`` at once. ``abandon``:
        a door's context in which the wait is cancelled when the caller's connection goes away.
        """
        if arguments is not None and not isinstance(arguments, dict):
            raise E.ValidationFailed("arguments must be a JSON object", field="arguments")
        if timeout_s is not None:  # the caller's own timeout has a declared range, like every number
            check_timeout("timeout_s", timeout_s, self.tool_timeout_max_s)
        if self.tracing.enabled and not in_span():  # a call from no door (internal, sandbox): its own trace
            return await self.call_at_door(ctx, name, arguments, None, mock=mock, services=services,
                                           timeout_s=timeout_s, resolved=resolved, progress=progress,
                                           wait_approval=wait_approval, abandon=abandon)
        started = time.perf_counter()
        # A door that did not open the call's clock (an SDK session, stdio, REST): one opens here.
        # The sandbox's calls (a mock policy, isolated services) are no one's traffic: none.
        door = call_phases.current() is None and mock is None and services is None
        clock = call_phases.start("other", started) if door else None
        try:
            msg = CallTool(ctx, name, arguments, mock, services, timeout_s, resolved, progress,
                           wait_approval=wait_approval, abandon=abandon)
            decision = await (self.decide(msg) if not self.tracing.enabled else self.decide_traced(msg))
            call_phases.mark("decided")
            if isinstance(decision, Held):
                call_phases.skip()  # its time is the approver's
                result = await self.held(decision)
            else:
                result = await self.runner.run(decision)
        finally:
            if clock is not None:
                self.phases.finish(clock, replied=False)
        if self.on_result is not None:
            self.on_result(ctx, result, time.perf_counter() - started)
        return result

    async def held(self, decision: Held) -> CallResult:
        """Wait for the held call's approval, then decide it again under the approval and run it."""
        if self.approvals is None:
            return await self.runner.run(decision)
        try:
            ticket = await self.approvals.hold(decision)
        finally:
            if decision.probe:  # its pending record was the audit probe's append
                self.runner.admission.probe_done(trio.current_time())
        if isinstance(ticket, CallResult):
            return ticket
        # Decided again: the firearm, the limits and the arguments' hash are checked at run time.
        again = await self.decide(replace(decision.call, approval=ticket))
        result = await self.runner.run(again)
        if outlives_its_caller(decision.call):
            await self.approvals.keep_result(decision.call.ctx, ticket, result)
        return result

    async def call_at_door(self, ctx: RequestContext, name: str, arguments: dict[str, Any] | None,
                           carrier: Mapping[str, Any] | None, **options: Any) -> CallResult:
        """:meth:`call_tool` inside the door's request span (doors call it when ``tracing.enabled``):
        its parent is the client's ``traceparent`` (``carrier``), its attributes who called, what
        it reached and how it ended."""
        with self.tracing.door("tools/call", carrier, call_attributes(ctx)) as span, recorded(span):
            result = await self.call_tool(ctx, name, arguments, **options)
            result_attributes(span, result)
            return result

    async def decide_traced(self, msg: CallTool) -> Decision:
        with self.tracing.span("northstar.gate_chain.decide") as span:
            decision = await self.decide(msg)
            attributes = {"northstar.decision": type(decision).__name__.lower()}
            gate = getattr(getattr(decision, "verdict", None), "gate", None)
            if isinstance(gate, str):
                attributes["northstar.gate"] = gate
            scope = getattr(decision, "target", {}).get("scope")
            if isinstance(scope, str):
                attributes["northstar.scope"] = scope
            span.set_attributes(attributes)
            return decision

    async def decide(self, msg: CallTool) -> Decision:
        """The gate chain's decision on a call (raises ``ServiceUnavailable`` when it has none)."""
        decision: CallResult | Decision | None = None
        try:
            # The decision is made in the gate chain actor, inline, in arrival order; it is run
            # (audit records, the tool call) here, in the caller's task. Shielded: a decision
            # already made (its limit slot taken) must reach the runner, which records even a
            # cancelled call. It waits no longer than the mailbox allows. One scope is both the
            # shield and the deadline.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + DECIDE_TIMEOUT_S) as waited:
                decision = await self.gate_chain.call(Decide(msg), timeout=None)
        except actors.Busy:
            raise E.ServiceUnavailable("the gateway is busy", retry_after=1) from None
        except (actors.ActorCrashed, actors.ActorStopped):
            raise E.ServiceUnavailable("the gate chain is restarting", retry_after=1) from None
        if waited.cancelled_caught or decision is None or isinstance(decision, CallResult):
            raise E.ServiceUnavailable("the gate chain did not answer in time", retry_after=1)
        return decision

    def inventory(self) -> list[dict[str, Any]]:
        return schema_gen.inventory(self.catalog.tools(), self.firearms.bindings())

    def list_tools(self, ctx: RequestContext) -> list[dict[str, Any]]:
        granted = self.firearms.granted(ctx.tenant, ctx.user)
        return schema_gen.mcp_tools(
            self.catalog.tools(), self.firearms.bindings(), granted=granted, unauthorized=self.unauthorized_tools
        )


def outlives_its_caller(call: CallTool) -> bool:
    """Whether a held call's wait goes on after its caller's connection closed: the Streamable
    HTTP session's (the SDK's session path, docs/approvals.md). Approved then, the call runs with
    nobody to answer, so its outcome is kept for the caller's re-issue."""
    return call.wait_approval and call.abandon is None and call.ctx.transport is Transport.STREAMABLE_HTTP
