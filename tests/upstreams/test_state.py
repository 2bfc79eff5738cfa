"""The connection state machine (pure): backoff, breaker, refusals, status."""

from __future__ import annotations

import random

from northstar.upstreams.pins import make_tool
from northstar.upstreams.spec import BreakerPolicy, RetryPolicy
from northstar.upstreams.state import State, UpstreamState, backoff_delay


def state(**kw: object) -> UpstreamState:
    retry = RetryPolicy(attempts=3, initial_backoff_s=1.0, max_backoff_s=5.0, multiplier=2.0, jitter=0.0)
    return UpstreamState("u", "stdio", retry, BreakerPolicy(failure_threshold=5, open_s=30.0),
                         rng=random.Random(1), **kw)  # type: ignore[arg-type]


def test_backoff_grows_is_capped_and_jittered_down_only() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=5.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(7)
    for attempt, ceiling in enumerate([1, 2, 4, 5, 5, 5]):
        delay = backoff_delay(policy, attempt, rng)
        assert ceiling * 0.5 <= delay <= ceiling
    assert backoff_delay(policy, 10_000, rng) <= 5.0


def test_connect_failures_back_off_then_open_the_breaker() -> None:
    s = state()
    assert s.connect_failed(0.0, "refused") == 1.0 and s.state is State.BACKOFF
    assert s.connect_failed(1.0, "refused") == 2.0
    assert s.refusal(1.5) is None  # calls may still wait for a reconnect
    assert s.connect_failed(3.0, "refused") == 30.0 and s.state is State.OPEN  # attempts exhausted
    assert s.refusal(10.0) == 23.0 and s.status(10.0).retry_after_s == 23.0
    s.connect_started()
    tools = {"t": make_tool({"name": "t", "inputSchema": {"type": "object"}})}
    drift = s.connected(tools, {"name": "srv", "version": "1"}, "2025-11-25")
    assert s.state is State.READY and s.failures == 0 and s.refusal(40.0) is None and drift.clean


def test_call_failures_open_the_breaker_while_ready() -> None:
    s = state()
    s.connected({}, None, None)
    for n in range(4):
        assert not s.call_failed(float(n), "timeout")
    s.call_succeeded()
    assert s.failures == 0
    opened = [s.call_failed(float(n), "timeout") for n in range(5)]
    assert opened == [False, False, False, False, True] and s.state is State.OPEN
    status = s.status(4.0)
    assert status.state == "open" and status.consecutive_failures == 5 and status.last_error == "timeout"


def test_a_lost_connection_reconnects_after_the_first_backoff() -> None:
    s = state()
    s.connected({}, None, None)
    assert s.connection_lost(0.0, "eof") == 1.0 and s.state is State.BACKOFF and s.connected_at is None


def test_first_listing_is_the_baseline_until_approved() -> None:
    s = state()
    one = {"t": make_tool({"name": "t", "description": "one"})}
    two = {"t": make_tool({"name": "t", "description": "two"}), "n": make_tool({"name": "n"})}
    assert s.connected(one, None, None).clean
    drift = s.listed_tools(two)
    assert drift.changed == ("t",) and drift.added == ("n",) and s.status(0).drift == drift.to_dict()
    assert s.approve({name: tool.pin for name, tool in two.items()}).clean


def test_stopped_refuses_for_good() -> None:
    s = state()
    s.stopped()
    assert s.refusal(0.0) == float("inf") and s.status(0.0).state == "stopped"
