"""Token bucket and per-principal counters: pure arithmetic over an explicit ``now``."""

from __future__ import annotations

import pytest

from northstar.policy.limits import PrincipalLimits, TokenBucket


def test_a_new_bucket_is_full() -> None:
    b = TokenBucket.full(rate=2.0, burst=5, now=100.0)
    assert (b.tokens, b.updated) == (5, 100.0)
    assert b.retry_after(100.0) is None


def test_burst_then_wait_one_token_period() -> None:
    b = TokenBucket.full(rate=4.0, burst=3, now=0.0)
    for _ in range(3):
        assert b.retry_after(0.0) is None
        b.take(0.0)
    assert b.tokens == 0.0
    assert b.retry_after(0.0) == pytest.approx(0.25)  # one token at 4 per second
    assert b.retry_after(0.1) == pytest.approx(0.15)
    assert b.retry_after(0.25) is None


def test_refill_is_linear_and_capped_at_burst() -> None:
    b = TokenBucket(rate=10.0, burst=5.0, tokens=0.0, updated=0.0)
    b.refill(0.3)
    assert b.tokens == pytest.approx(3.0)
    b.refill(100.0)
    assert b.tokens == 5.0


def test_time_going_backwards_adds_nothing() -> None:
    b = TokenBucket(rate=10.0, burst=5.0, tokens=1.0, updated=50.0)
    b.refill(40.0)
    assert (b.tokens, b.updated) == (1.0, 50.0)
    b.refill(50.1)
    assert b.tokens == pytest.approx(2.0)


def test_overdraft_is_paid_back_before_the_next_token() -> None:
    b = TokenBucket(rate=1.0, burst=2.0, tokens=0.5, updated=0.0)
    b.take(0.0)  # takes are not refused by the bucket itself: the gate asks retry_after first
    assert b.tokens == pytest.approx(-0.5)
    assert b.retry_after(0.0) == pytest.approx(1.5)


def test_zero_rate_never_refills() -> None:
    b = TokenBucket(rate=0.0, burst=1.0, tokens=0.0, updated=0.0)
    assert b.retry_after(1e9) == 3600.0


def test_in_flight_counts_per_principal() -> None:
    lim = PrincipalLimits(rate=100.0, burst=10, max_in_flight=2)
    lim.acquire("t/a", 0.0)
    lim.acquire("t/a", 0.0)
    lim.acquire("t/b", 0.0)
    assert lim.in_flight == {"t/a": 2, "t/b": 1}
    lim.release("t/a")
    lim.release("t/b")
    assert lim.in_flight == {"t/a": 1}
    lim.release("t/a")
    lim.release("t/a")  # an extra release never goes negative
    assert lim.in_flight == {}


def test_each_principal_has_its_own_bucket() -> None:
    lim = PrincipalLimits(rate=1.0, burst=2, max_in_flight=10)
    for _ in range(2):
        lim.acquire("t/a", 0.0)
    assert lim.bucket("t/a", 0.0).retry_after(0.0) == pytest.approx(1.0)
    assert lim.bucket("t/b", 0.0).retry_after(0.0) is None
    assert lim.bucket("t/a", 1.0).retry_after(1.0) is None


def test_the_principal_table_is_bounded() -> None:
    lim = PrincipalLimits(rate=1.0, burst=1, max_in_flight=1, max_principals=3)
    for i in range(3):
        lim.bucket(f"t/u{i}", 0.0)
    assert len(lim.buckets) == 3
    lim.bucket("t/new", 0.0)
    assert list(lim.buckets) == ["t/new"]
