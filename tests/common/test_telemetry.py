"""The tracing API: off costs nothing and yields no span; a client's trace context never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from northstar.common.telemetry import Tracing, carrier_of, parent_of

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_off_is_one_shared_no_op() -> None:
    tracing = Tracing()
    assert not tracing.enabled
    assert tracing.span("a") is tracing.span("b") is tracing.door("c", {"traceparent": VALID})
    with tracing.span("a") as span:
        assert span is None


def test_a_valid_traceparent_is_the_parent() -> None:
    from opentelemetry.trace import get_current_span

    ctx = parent_of({"traceparent": VALID, "tracestate": "vendor=1"})
    assert ctx is not None
    parent = get_current_span(ctx).get_span_context()
    assert (parent.trace_id, parent.span_id, parent.is_remote) == (0x0AF7651916CD43DD8448EB211C80319C,
                                                                    0xB7AD6B7169203331, True)


@given(st.one_of(st.none(), st.dictionaries(st.sampled_from(["traceparent", "tracestate", "x"]),
                                            st.one_of(st.text(max_size=300), st.integers(), st.none(),
                                                      st.lists(st.text(max_size=5), max_size=3)))))
def test_anything_a_client_sends_is_a_parent_or_nothing(carrier: Any) -> None:
    ctx = parent_of(carrier)
    assert ctx is None or isinstance(ctx, dict)


def test_the_header_wins_over_meta() -> None:
    headers = {"traceparent": VALID}
    assert carrier_of(headers, {"traceparent": "00-other"})["traceparent"] == VALID
    assert carrier_of({}, {"traceparent": VALID}) == {"traceparent": VALID}
    assert carrier_of(None, None) is None
    assert carrier_of(None, "not a mapping") is None
