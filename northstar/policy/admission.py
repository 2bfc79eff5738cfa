"""The admission ledger: per-principal limit slots and the audit probe, shared by deciding and running.

The gate chain actor *takes* a slot in the same synchronous step as the gates (so concurrent
calls cannot all pass one in-flight or rate check); the caller's task, running the decision,
*gives it back*. Both sides run on one trio thread and every method here is synchronous, so
there is no interleaving inside a method. The composition root builds one ledger per gateway:
it outlives a restart of the gate chain actor, so a call in flight across that restart still
gives its slot back to the ledger that counted it.

While the audit log is unhealthy the gateway fails closed, but lets one call at a time, at most
one per ``probe_interval_s``, through as a *probe* that commits its decision before anything
runs: its success is what turns the audit log healthy again (without probes nothing would ever
be appended, and the gateway would refuse every call until restarted).
"""

from __future__ import annotations

import math

from northstar.common import errors as E
from northstar.policy.limits import PrincipalLimits


class Admission:
    def __init__(self, limits: PrincipalLimits, *, probe_interval_s: float = 1.0) -> None:
        self.limits = limits
        self.probe_interval_s = probe_interval_s
        self._probing = False
        self._next_probe_at: float | None = None

    # -- limit slots --------------------------------------------------------------------------
    def in_flight(self, principal: str) -> int:
        return self.limits.in_flight.get(principal, 0)

    def alone(self) -> bool:
        """At most one governed call admitted and not yet finished, in this process."""
        return self.limits.total_in_flight <= 1

    def rate_retry_after(self, principal: str, now: float) -> float | None:
        return self.limits.bucket(principal, now).retry_after(now)

    def take(self, principal: str, now: float) -> None:
        self.limits.acquire(principal, now)

    def give_back(self, principal: str) -> None:
        self.limits.release(principal)

    # -- the audit probe ----------------------------------------------------------------------
    def audit_gate(self, healthy: bool, now: float) -> bool | E.AuditUnavailable:
        """With a healthy audit log: False (no probe). Otherwise True when this call is the probe,
        or the refusal to answer (its ``Retry-After`` is the time to the next probe)."""
        if healthy:
            self._next_probe_at = None
            return False
        if self._next_probe_at is None:  # it failed elsewhere (e.g. a policy record)
            self._next_probe_at = now + self.probe_interval_s
        if self._probing or now < self._next_probe_at:
            return E.AuditUnavailable(retry_after=max(1, math.ceil(self._next_probe_at - now)))
        self._probing = True
        return True

    def audit_failed(self, now: float) -> None:
        """A call found the audit log unavailable: no probe before ``probe_interval_s``."""
        if self._next_probe_at is None:
            self._next_probe_at = now + self.probe_interval_s

    def probe_done(self, now: float) -> None:
        self._probing = False
        self._next_probe_at = now + self.probe_interval_s
