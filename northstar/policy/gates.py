"""The gates: small, pure decisions over a call's facts.

Each gate is a function ``gate(facts) -> Verdict | None``: ``None`` passes the call on, a
``Verdict`` with ``allowed=False`` stops it (first deny wins). Gates do no I/O; the gate
chain actor gathers every fact they need (bindings, grants, limit state, the clock)
before running them. :data:`GATES` is the declared order: identity, resolve, firearm, input,
limits. The firearm gate comes before input validation so that a caller without the firearm
learns nothing of the operation's schema (its arguments are not even looked at); the input
gate still runs every check a published tool narrows its schema with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from northstar.common import errors as E
from northstar.common.identity import Mode, RequestContext
from northstar.mcp_gateway.tools.model import Operation, Scope, ToolDefinition


@dataclass(frozen=True, slots=True)
class MockPolicy:
    """A what-if policy for sandbox dry runs: decide with this instead of the live one."""

    grants: frozenset[str] = frozenset()
    bindings: Mapping[str, str | None] = field(default_factory=dict)
    force_deny: str | None = None
    replace_grants: bool = False
    approval: str | None = None  # simulated approval: approved | rejected | pending

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> MockPolicy | None:
        if raw is None:
            return None
        try:
            return cls(
                grants=frozenset(raw.get("grants", ())),
                bindings=dict(raw.get("bindings", {})),
                force_deny=raw.get("force_deny"),
                replace_grants=bool(raw.get("replace_grants", False)),
                approval=_simulated(raw.get("approval")),
            )
        except (TypeError, ValueError) as exc:
            raise E.ValidationFailed("mock_policy is malformed", field="mock_policy") from exc


def _simulated(value: Any) -> str | None:
    if value is None or value in ("approved", "rejected", "pending"):
        return value  # type: ignore[no-any-return]
    raise ValueError("approval must be approved, rejected or pending")


@dataclass(frozen=True, slots=True)
class CallFacts:
    ctx: RequestContext
    name: str
    arguments: Mapping[str, Any] | None
    tool: ToolDefinition | None
    scope: Scope | None
    op: Operation | None
    firearm: str | None
    granted: frozenset[str]
    in_flight: int
    max_in_flight: int
    rate_retry_after: float | None
    mock: MockPolicy | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    gate: str
    allowed: bool
    code: str = "ok"
    reason: str = ""
    error: E.NorthstarError | None = None
    validated: Any = None

    def to_trace(self) -> dict[str, Any]:
        return {"gate": self.gate, "decision": "allow" if self.allowed else "deny", "code": self.code,
                "reason": self.reason}


def deny(gate: str, err: E.NorthstarError) -> Verdict:
    return Verdict(gate=gate, allowed=False, code=err.code, reason=err.message, error=err)


def identity_gate(f: CallFacts) -> Verdict | None:
    if f.ctx.mode not in (Mode.SAAS, Mode.ENTERPRISE, Mode.LAB):
        return deny("identity", E.PolicyDenied("unknown mode", gate="identity"))
    if f.mock is not None and f.mock.force_deny:
        return deny("identity", E.PolicyDenied(f"forced deny: {f.mock.force_deny}", gate="mock_policy"))
    return None


def resolve_gate(f: CallFacts) -> Verdict | None:
    if f.tool is None or f.op is None or f.scope is None:
        return deny("resolve", E.UnknownTool(f"unknown tool: {f.name}", name=f.name))
    return None


def input_gate(f: CallFacts) -> Verdict | None:
    assert f.op is not None
    if f.op.argument_check is not None:
        problems = f.op.argument_check(dict(f.arguments or {}))
        if problems:
            return deny("input", E.ValidationFailed("arguments do not match the input schema", errors=problems))
    args = dict(f.op.presets)
    args.update(f.arguments or {})
    if f.op.upstream is not None:
        # An upstream tool is described by its JSON Schema, checked above (argument_check);
        # what it is called with is the presets and the caller's arguments.
        return Verdict(gate="input", allowed=True, validated=args)
    try:
        validated = f.op.input_model.model_validate(args)
    except ValidationError as exc:
        errors = [
            {"path": E.json_pointer(*e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        return deny("input", E.ValidationFailed("arguments do not match the input schema", errors=errors))
    return Verdict(gate="input", allowed=True, validated=validated)


def firearm_gate(f: CallFacts) -> Verdict | None:
    if f.firearm is None or f.firearm in f.granted:
        return None
    assert f.scope is not None
    err = E.FirearmRequired(
        f"scope {f.scope.name} requires firearm {f.firearm}", scope=f.scope.name, firearm=f.firearm
    )
    return deny("firearm", err)


def limits_gate(f: CallFacts) -> Verdict | None:
    if f.in_flight >= f.max_in_flight:
        return deny("limits", E.RateLimited("too many concurrent calls", retry_after=1, limit=f.max_in_flight))
    if f.rate_retry_after is not None:
        wait = max(1, int(f.rate_retry_after + 0.999))
        return deny("limits", E.RateLimited("call rate limit exceeded", retry_after=wait))
    return None


Gate = Callable[[CallFacts], "Verdict | None"]
GATES: tuple[tuple[str, Gate], ...] = (
    ("identity", identity_gate),
    ("resolve", resolve_gate),
    ("firearm", firearm_gate),
    ("input", input_gate),
    ("limits", limits_gate),
)


def evaluate(facts: CallFacts) -> tuple[Verdict, list[Verdict]]:
    """Run the gates in order; return the final verdict and the trace (one entry a gate)."""
    trace: list[Verdict] = []
    validated: Any = None
    for name, gate in GATES:
        verdict = gate(facts) or Verdict(gate=name, allowed=True)
        trace.append(verdict)
        if not verdict.allowed:
            return verdict, trace
        if verdict.validated is not None:
            validated = verdict.validated
    return Verdict(gate="all", allowed=True, validated=validated), trace
