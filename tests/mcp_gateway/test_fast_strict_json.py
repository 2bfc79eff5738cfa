"""The orjson path of the front door's strict JSON check agrees with the careful one, or defers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar.common import errors as E
from northstar.mcp_gateway.protocol.strict_json import (
    MAX_JSON_DEPTH,
    MAX_JSON_ITEMS,
    fast_strict_json,
    parse_strict_json,
)

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def careful(body: bytes) -> object:
    try:
        return parse_strict_json(body)
    except E.InvalidJson:
        return "invalid"


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_agrees_with_the_careful_parse_or_defers(value: object) -> None:
    body = json.dumps(value, allow_nan=True).encode()
    quick = fast_strict_json(body, MAX_JSON_DEPTH, MAX_JSON_ITEMS)
    if quick is not None:
        assert quick == careful(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_arbitrary_bytes_never_pass_what_the_careful_parse_refuses(body: bytes) -> None:
    quick = fast_strict_json(body, MAX_JSON_DEPTH, MAX_JSON_ITEMS)
    if quick is not None:
        assert careful(body) == quick


@pytest.mark.parametrize("body", [
    b'{"a": 1, "a": 2}',                      # a duplicate key: the careful path names it
    b'{"a": {"b": 1, "b": 1}}',
    b'[1e400]',                                # overflows to infinity
    b'{"n": 123456789012345678901234567890}',  # beyond 64 bits
    b'{"s": "\\ud800"}',                       # a lone surrogate escape
    b'NaN',
    b'[' * 65 + b']' * 65,                      # deeper than the limit
])
def test_defers_what_it_cannot_vouch_for(body: bytes) -> None:
    assert fast_strict_json(body, MAX_JSON_DEPTH, MAX_JSON_ITEMS) is None


def test_takes_an_ordinary_call_and_defers_colons_in_strings() -> None:
    call = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo__ping","arguments":{"message":"hi"}}}'
    assert fast_strict_json(call, MAX_JSON_DEPTH, MAX_JSON_ITEMS) == json.loads(call)
    url = b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"u":"https://example.com"}}'
    assert fast_strict_json(url, MAX_JSON_DEPTH, MAX_JSON_ITEMS) is None  # the careful path decides
    assert fast_strict_json(b"[1,2,3]", MAX_JSON_DEPTH, 4) is None  # longer than max_items bytes
