"""Per-principal call limits: a token bucket for rate and a counter for concurrency.

Pure arithmetic over an explicit ``now`` so the maths is testable without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def retry_after(self, now: float) -> float | None:
        """Seconds until one token is available, or None when one is available now."""
        self.refill(now)
        if self.tokens >= 1.0:
            return None
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 3600.0

    def take(self, now: float) -> None:
        self.refill(now)
        self.tokens -= 1.0


class PrincipalLimits:
    """Concurrency counters and rate buckets keyed by principal, bounded in size."""

    def __init__(self, *, rate: float, burst: int, max_in_flight: int, max_principals: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_in_flight = max_in_flight
        self.max_principals = max_principals
        self.in_flight: dict[str, int] = {}
        self.total_in_flight = 0  # every principal's, summed
        self.buckets: dict[str, TokenBucket] = {}

    def bucket(self, principal: str, now: float) -> TokenBucket:
        b = self.buckets.get(principal)
        if b is None:
            if len(self.buckets) >= self.max_principals:
                self.buckets.clear()  # a flood of principals resets the table rather than grow it
            b = self.buckets[principal] = TokenBucket.full(self.rate, self.burst, now)
        return b

    def acquire(self, principal: str, now: float) -> None:
        self.bucket(principal, now).take(now)
        self.in_flight[principal] = self.in_flight.get(principal, 0) + 1
        self.total_in_flight += 1

    def release(self, principal: str) -> None:
        n = self.in_flight.get(principal, 0) - 1
        if n >= 0:  # a release without its acquire changes nothing
            self.total_in_flight -= 1
        if n <= 0:
            self.in_flight.pop(principal, None)
        else:
            self.in_flight[principal] = n
