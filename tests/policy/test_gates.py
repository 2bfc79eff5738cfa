"""The pure gates: their declared order, first deny wins, and what each one decides."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from northstar.common import errors as E
from northstar.common.identity import Mode, RequestContext
from northstar.mcp_gateway.tools.echo import ECHO
from northstar.mcp_gateway.tools.media_v2 import MEDIA_V2
from northstar.policy.gates import GATES, CallFacts, MockPolicy, Verdict, evaluate

WRITE_FIREARM = "firearm.media.write"
GOOD_ARGS = {"name": "a.txt", "mime_type": "text/plain", "content_text": "hi"}


def op_of(tool: Any, name: str) -> tuple[Any, Any, Any]:
    found = tool.find(name)
    assert found is not None
    return tool, found[0], found[1]


def facts(**changes: Any) -> CallFacts:
    """Facts of a call that passes every gate; ``changes`` break the ones a test wants."""
    tool, scope, op = op_of(MEDIA_V2, "create_asset")
    base = CallFacts(
        ctx=RequestContext(request_id="r1", tenant="acme", user="alice"),
        name="media_v2.create_asset",
        arguments=dict(GOOD_ARGS),
        tool=tool,
        scope=scope,
        op=op,
        firearm=WRITE_FIREARM,
        granted=frozenset({WRITE_FIREARM}),
        in_flight=0,
        max_in_flight=4,
        rate_retry_after=None,
    )
    return dataclasses.replace(base, **changes)


UNKNOWN_TOOL = {"tool": None, "scope": None, "op": None, "name": "no.such"}
BAD_MODE = {"ctx": RequestContext(request_id="r1").replace(mode="root")}
BAD_ARGS = {"arguments": {"name": "a.txt", "mime_type": 42}}
NO_FIREARM = {"granted": frozenset()}
TOO_MANY = {"in_flight": 4}


def test_the_declared_order() -> None:
    assert [name for name, _ in GATES] == ["identity", "resolve", "firearm", "input", "limits"]


def test_a_clean_call_passes_every_gate_with_a_full_trace() -> None:
    verdict, trace = evaluate(facts())
    assert verdict.allowed and verdict.gate == "all"
    assert [v.gate for v in trace] == ["identity", "resolve", "firearm", "input", "limits"]
    assert all(v.allowed for v in trace)
    assert verdict.validated.name == "a.txt"  # the validated input model is carried to the tool
    assert [t["decision"] for t in (v.to_trace() for v in trace)] == ["allow"] * 5


@pytest.mark.parametrize(
    ("broken", "gate", "code"),
    [
        ({**BAD_MODE, **UNKNOWN_TOOL, **NO_FIREARM, **TOO_MANY}, "identity", "policy_denied"),
        ({**UNKNOWN_TOOL, **TOO_MANY}, "resolve", "unknown_tool"),
        ({**BAD_ARGS, **NO_FIREARM, **TOO_MANY}, "firearm", "firearm_required"),
        ({**BAD_ARGS, **TOO_MANY, "rate_retry_after": 3.0}, "input", "validation_error"),
        (TOO_MANY, "limits", "rate_limited"),
    ],
)
def test_first_deny_wins_and_later_gates_do_not_run(broken: dict[str, Any], gate: str, code: str) -> None:
    verdict, trace = evaluate(facts(**broken))
    assert not verdict.allowed
    assert (verdict.gate, verdict.code) == (gate, code)
    assert isinstance(verdict.error, E.NorthstarError) and verdict.error.code == code
    assert [v.gate for v in trace][-1] == gate
    assert all(v.allowed for v in trace[:-1])
    assert len(trace) == [name for name, _ in GATES].index(gate) + 1


def test_an_unlicensed_caller_gets_firearm_required_before_any_input_check() -> None:
    """It learns nothing of the schema: not even that its arguments are wrong."""
    verdict, trace = evaluate(facts(**BAD_ARGS, **NO_FIREARM))
    assert (verdict.gate, verdict.code) == ("firearm", "firearm_required")
    assert "input" not in [v.gate for v in trace]
    assert "mime_type" not in str(verdict.error.details) and "schema" not in verdict.error.message


def test_firearm_denial_names_the_scope_and_the_firearm() -> None:
    verdict, _ = evaluate(facts(granted=frozenset()))
    assert isinstance(verdict.error, E.FirearmRequired)
    assert verdict.error.http_status == 403
    assert verdict.error.details == {"scope": "media.write", "firearm": WRITE_FIREARM}


@pytest.mark.parametrize(
    "near_miss",
    ["firearm.media.writ", "firearm.media.write.all", "firearm.media", "firearm.media.write.",
     "Firearm.media.write", "firearm.media.write ", "media.write", "firearm.media.read"],
)
def test_near_miss_firearms_do_not_count(near_miss: str) -> None:
    verdict, _ = evaluate(facts(granted=frozenset({near_miss})))
    assert verdict.gate == "firearm" and not verdict.allowed


def test_an_unbound_scope_needs_no_firearm() -> None:
    tool, scope, op = op_of(MEDIA_V2, "list_assets")
    verdict, _ = evaluate(facts(tool=tool, scope=scope, op=op, arguments={}, firearm=None, granted=frozenset()))
    assert verdict.allowed


@pytest.mark.parametrize(("wait", "retry_after"), [(0.01, 1), (0.999, 1), (1.0, 1), (1.2, 2), (2.3, 3)])
def test_rate_limit_retry_after_rounds_up_to_whole_seconds(wait: float, retry_after: int) -> None:
    verdict, _ = evaluate(facts(rate_retry_after=wait))
    assert verdict.code == "rate_limited"
    assert verdict.error is not None and verdict.error.retry_after == retry_after


def test_concurrency_limit_names_the_limit() -> None:
    verdict, _ = evaluate(facts(in_flight=9, max_in_flight=9))
    assert verdict.error is not None and verdict.error.details == {"retry_after": 1, "limit": 9}


def test_input_gate_reports_every_error_without_echoing_input() -> None:
    verdict, _ = evaluate(facts(arguments={"name": "a.txt", "mime_type": 42, "secret_field": "s3cr3t"}))
    assert verdict.code == "validation_error"
    errors = verdict.error.details["errors"]  # type: ignore[union-attr]
    assert {e["path"] for e in errors} >= {"/mime_type", "/secret_field"}
    assert "s3cr3t" not in repr(errors)


def test_none_arguments_are_an_empty_object() -> None:
    tool, scope, op = op_of(ECHO, "ping")
    verdict, _ = evaluate(facts(tool=tool, scope=scope, op=op, arguments=None, firearm=None))
    assert verdict.allowed and verdict.validated.message == "ping"


def test_presets_are_merged_under_the_arguments() -> None:
    tool, scope, op = op_of(ECHO, "ping")
    op = dataclasses.replace(op, presets={"message": "preset", "data": {"k": 1}})
    verdict, _ = evaluate(facts(tool=tool, scope=scope, op=op, arguments={"message": "mine"}, firearm=None))
    assert verdict.validated.message == "mine" and verdict.validated.data == {"k": 1}


def test_valid_modes_pass_the_identity_gate() -> None:
    for mode in Mode:
        verdict, _ = evaluate(facts(ctx=RequestContext(request_id="r", mode=mode)))
        assert verdict.allowed


def test_mock_policy_force_deny_stops_at_identity() -> None:
    mock = MockPolicy(force_deny="what if")
    verdict, trace = evaluate(facts(mock=mock))
    assert (verdict.gate, verdict.code, len(trace)) == ("identity", "policy_denied", 1)
    assert "what if" in verdict.reason


def test_mock_policy_parsing() -> None:
    assert MockPolicy.from_dict(None) is None
    mock = MockPolicy.from_dict({"grants": ["firearm.x.y"], "bindings": {"s": "firearm.x.y"}, "replace_grants": 1})
    assert mock is not None
    assert mock.grants == frozenset({"firearm.x.y"}) and mock.bindings == {"s": "firearm.x.y"}
    assert mock.replace_grants is True
    with pytest.raises(E.ValidationFailed):
        MockPolicy.from_dict({"grants": 5})
    with pytest.raises(E.ValidationFailed):
        MockPolicy.from_dict({"bindings": ["not", "a", "mapping"]})


def test_verdict_trace_shape() -> None:
    assert Verdict(gate="g", allowed=False, code="c", reason="r").to_trace() == {
        "gate": "g", "decision": "deny", "code": "c", "reason": "r"
    }
