"""The fast schema check (``jsonschema_rs``) only ever says "valid" where the reference
validator (``jsonschema``) agrees; a "no" is judged again by the reference, whose message stands.

Generated JSON values against the kinds of schema upstream tools declare (what pydantic and
FastMCP emit: ``$defs`` and ``$ref``, ``anyOf`` with null, enums, bounds, closed objects).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar.upstreams.results import fast_check, output_validator, schema_problem
from northstar.workbench.upstream_ops import argument_check

SCHEMAS: dict[str, dict[str, Any]] = {
    "pydantic output": {
        "type": "object", "title": "EchoOutput", "required": ["message", "received_at"],
        "properties": {"pong": {"type": "boolean", "default": True}, "message": {"type": "string"},
                       "data": {"anyOf": [{"type": "object", "additionalProperties": True}, {"type": "null"}]},
                       "received_at": {"type": "string", "format": "date-time"}},
    },
    "refs and enums": {
        "$defs": {"Kind": {"enum": ["a", "b", 3, None]},
                  "Item": {"type": "object", "properties": {"kind": {"$ref": "#/$defs/Kind"},
                                                            "n": {"type": "integer", "minimum": 0, "maximum": 10}},
                           "required": ["kind"], "additionalProperties": False}},
        "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "maxItems": 3}},
    },
    "numbers": {"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": -1.5, "multipleOf": 0.5},
                                                 "i": {"type": "integer"}, "c": {"const": 1}}},
    "strings": {"type": "object", "properties": {"s": {"type": "string", "minLength": 1, "maxLength": 3}},
                "minProperties": 1, "additionalProperties": {"type": ["string", "null", "boolean"]}},
}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["a", "b", "", "ab", "abcd", "é", "2026-12-07T14:00:00Z", "not a date"]) | st.integers(-2, 12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["message", "received_at", "pong", "data", "items", "kind", "n", "x", "i", "c", "s", "z"]),
        inner, max_size=5),
    max_leaves=12,
)


@pytest.mark.parametrize("name", list(SCHEMAS))
@settings(max_examples=400, deadline=None)
@given(value=JSON)
def test_the_fast_yes_is_the_reference_yes(name: str, value: Any) -> None:
    schema = SCHEMAS[name]
    fast = fast_check(schema)
    assert fast is not None, "the fast check should take this schema"
    reference = output_validator(schema)
    if fast(value):
        assert reference.is_valid(value), f"fast said valid, the reference did not: {value!r}"
    assert (schema_problem(reference, value, fast) is None) == reference.is_valid(value)


def test_a_refusal_names_the_rule_and_the_path() -> None:
    schema = SCHEMAS["refs and enums"]
    problem = schema_problem(output_validator(schema), {"items": [{"kind": "zzz"}]}, fast_check(schema))
    assert problem is not None and "/items/0/kind" in problem and "enum" in problem


def test_no_reference_is_ever_fetched() -> None:
    # A reachable address would be fetched by a validator that resolves remote references: the
    # fast check refuses to build (the reference, with an empty registry, fails to resolve).
    assert fast_check({"$ref": "http://127.0.0.1:9/schema.json"}) is None


def test_the_input_gate_leaves_regular_expressions_to_the_reference() -> None:
    patterned = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-z]+$"}}}
    assert fast_check(patterned, regex=False) is None
    assert fast_check(patterned) is not None
    check = argument_check(patterned, {})
    # Python's "$" also matches before a final newline: the reference's verdict is the gate's.
    assert check({"id": "abc"}) == []
    assert check({"id": "ABC"}) != []


def test_the_input_gate_with_the_fast_check_keeps_its_messages() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}, "additionalProperties": False}
    check = argument_check(schema, {"n": 1})
    assert check({}) == []
    assert check({"n": 1}) == []
    assert [e["path"] for e in check({"n": 2})] == ["/n"]  # a preset is fixed
    assert [e["message"] for e in check({"x": 1})] == ["Additional properties are not allowed ('x' was unexpected)"]
