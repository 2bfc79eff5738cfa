"""The connection state of one upstream (pure): backoff, circuit breaker, tools, drift, status.

Sync and clock-free: every method that depends on time takes ``now`` (trio's clock in the
shell). The shell reports what happened (a connect attempt began, succeeded or failed; a
call succeeded or failed; the connection was lost) and asks what to do next
(:meth:`UpstreamState.next_wait`, :meth:`UpstreamState.refusal`).

States::

    connecting --ok--> ready --lost--> backoff --> connecting ...
        |                 \\--failures >= threshold--> open
        \\--fail--> backoff (attempt n: initial * multiplier**n, capped, jittered)
                     \\--failures >= threshold, or ``attempts`` in a row--> open (for open_s)
    open --open_s elapsed--> connecting (the probe: one connect; success closes the breaker)
    stopped: the session ended

Failures that count: connect attempts that fail, calls that time out or lose the
connection. An upstream that *answers* with an error is healthy; its error is the caller's.
While the breaker is open, calls are refused at once with ``retry_after``.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from northstar.upstreams.pins import Drift, UpstreamTool, drift, pins_of
from northstar.upstreams.spec import BreakerPolicy, RetryPolicy


class State(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    BACKOFF = "backoff"
    OPEN = "open"  # the circuit breaker is open
    STOPPED = "stopped"


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """The wait before retry ``attempt`` (0-based): exponential, capped, minus up to ``jitter``."""
    raw = policy.initial_backoff_s * policy.multiplier ** min(attempt, 64)
    capped = min(policy.max_backoff_s, raw)
    return capped * (1.0 - policy.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """What an operator sees of one upstream (no secret, no raw upstream text unredacted)."""

    name: str
    transport: str
    state: str
    connected_since: str | None
    last_error: str | None
    last_error_at: str | None
    consecutive_failures: int
    retry_after_s: float | None
    tool_count: int
    drift: dict[str, list[str]] | None
    calls_in_flight: int
    server: dict[str, str] | None
    protocol_version: str | None

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


def _wall() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class UpstreamState:
    """The mutable state of one upstream's connection, driven by its session shell."""

    name: str
    transport: str
    retry: RetryPolicy
    breaker: BreakerPolicy
    approved: dict[str, str] | None = None  # the approved pins; None: the first listing is the baseline
    rng: random.Random = field(default_factory=random.Random)
    state: State = State.CONNECTING
    failures: int = 0  # consecutive
    attempt: int = 0  # connect attempts in this round
    wait_until: float = 0.0
    connected_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    tools: dict[str, UpstreamTool] = field(default_factory=dict)
    listed: bool = False
    in_flight: int = 0
    server: dict[str, str] | None = None
    protocol_version: str | None = None

    # ------------------------------------------------------------------ connection

    def connect_started(self) -> None:
        self.state = State.CONNECTING

    def connected(self, tools: Mapping[str, UpstreamTool], server: dict[str, str] | None,
                  protocol_version: str | None) -> Drift:
        """A handshake and a listing succeeded: ready, breaker closed; returns the drift."""
        self.state = State.READY
        self.failures = 0
        self.attempt = 0
        self.connected_at = _wall()
        self.server, self.protocol_version = server, protocol_version
        return self.listed_tools(tools)

    def listed_tools(self, tools: Mapping[str, UpstreamTool]) -> Drift:
        self.tools = dict(tools)
        self.listed = True
        if self.approved is None:
            self.approved = pins_of(self.tools)  # trust on first use, until an approval replaces it
        return self.drift()

    def approve(self, pins: Mapping[str, str]) -> Drift:
        self.approved = dict(pins)
        return self.drift()

    def drift(self) -> Drift:
        if self.approved is None or not self.listed:
            return Drift()
        return drift(self.approved, pins_of(self.tools))

    def connect_failed(self, now: float, error: str) -> float:
        """A connect attempt failed; returns how long to wait before the next one."""
        self._failed(error)
        self.attempt += 1
        if self.failures >= self.breaker.failure_threshold or self.attempt >= self.retry.attempts:
            return self._open(now)
        delay = backoff_delay(self.retry, self.attempt - 1, self.rng)
        self.state, self.wait_until = State.BACKOFF, now + delay
        return delay

    def connection_lost(self, now: float, error: str) -> float:
        """The upstream went away while ready; returns the wait before reconnecting."""
        self._failed(error)
        self.connected_at = None
        if self.failures >= self.breaker.failure_threshold:
            return self._open(now)
        delay = backoff_delay(self.retry, 0, self.rng)
        self.state, self.wait_until = State.BACKOFF, now + delay
        return delay

    def _open(self, now: float) -> float:
        self.state, self.wait_until = State.OPEN, now + self.breaker.open_s
        self.attempt = 0
        self.connected_at = None
        return self.breaker.open_s

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error, self.last_error_at = error, _wall()

    def stopped(self) -> None:
        self.state = State.STOPPED
        self.connected_at = None

    # ------------------------------------------------------------------ calls

    def call_succeeded(self) -> None:
        self.failures = 0

    def call_failed(self, now: float, error: str) -> bool:
        """A call timed out or lost its connection; True when the breaker opens now (tear down)."""
        self._failed(error)
        if self.state is State.READY and self.failures >= self.breaker.failure_threshold:
            self._open(now)
            return True
        return False

    def refusal(self, now: float) -> float | None:
        """``retry_after`` (s) when a call must be refused at once (breaker open, stopped), else None."""
        if self.state is State.OPEN:
            return max(0.0, self.wait_until - now)
        if self.state is State.STOPPED:
            return math.inf
        return None

    # ------------------------------------------------------------------ view

    def status(self, now: float) -> UpstreamStatus:
        waiting = self.state in (State.BACKOFF, State.OPEN)
        current_drift = self.drift()
        return UpstreamStatus(
            name=self.name, transport=self.transport, state=self.state.value,
            connected_since=self.connected_at if self.state is State.READY else None,
            last_error=self.last_error, last_error_at=self.last_error_at,
            consecutive_failures=self.failures,
            retry_after_s=round(max(0.0, self.wait_until - now), 3) if waiting else None,
            tool_count=len(self.tools), drift=None if current_drift.clean else current_drift.to_dict(),
            calls_in_flight=self.in_flight, server=self.server, protocol_version=self.protocol_version,
        )
