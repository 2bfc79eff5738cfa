"""Caps on what one principal and everyone together may hold open: SSE streams and new sessions (429 / 503)."""

from __future__ import annotations

from collections.abc import Callable, Container

from northstar.common import errors as E
from northstar.policy.shared_limits import NO_SLOT, Slot


# -- capacity: SSE streams and sessions, per principal and in total -------------------------
class SessionTicket:
    """A new handshake-era session being opened; kept once the response names its id."""

    def __init__(self, limits: CapacityLimits, principal: str, slot: Slot = NO_SLOT) -> None:
        self.limits = limits
        self.principal = principal
        self.done = False
        self.slot = slot  # its place on the shared limits engine (replicas), if any
        self.session_id: str | None = None

    def opened(self, session_id: str) -> None:
        self.session_id = session_id
        self.limits.sessions.setdefault(self.principal, set()).add(session_id)
        if self.slot.key is not None:
            self.limits.shared_slots[session_id] = self.slot

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.limits.end_pending(self.principal)


class CapacityLimits:
    """Open SSE streams and Streamable HTTP sessions, counted per principal and in total.

    Streams: GET /sse (a legacy session) and GET /mcp (a session's standalone stream);
    over the per-principal cap -> 429, over the total -> 503, both with Retry-After. A
    handshake-era session is counted from the request that opens it; the SDK's session
    manager (``live_sessions``) says which ids are still alive. Its own ``max_sessions``
    answers 503 for the total.
    """

    RETRY_AFTER_S = 5

    def __init__(self, *, max_sse_streams: int, max_sse_streams_per_principal: int,
                 max_sessions_per_principal: int, live_sessions: Callable[[], Container[str]] | None) -> None:
        self.max_sse_streams = max_sse_streams
        self.max_sse_streams_per_principal = max_sse_streams_per_principal
        self.max_sessions_per_principal = max_sessions_per_principal
        self.live_sessions = live_sessions
        self.streams: dict[str, int] = {}
        self.total_streams = 0
        self.sessions: dict[str, set[str]] = {}
        self.pending: dict[str, int] = {}
        # Sessions held on the shared limits engine, by id: their leases are renewed while the
        # session lives (SessionLeases), given back when it is gone.
        self.shared_slots: dict[str, Slot] = {}
        self._admitted = 0

    def open_stream(self, principal: str) -> Callable[[], None]:
        if self.total_streams >= self.max_sse_streams:
            raise E.ServiceUnavailable("too many open SSE streams", retry_after=self.RETRY_AFTER_S,
                                       limit=self.max_sse_streams)
        if self.streams.get(principal, 0) >= self.max_sse_streams_per_principal:
            raise E.RateLimited("too many open SSE streams for this principal", retry_after=self.RETRY_AFTER_S,
                                limit=self.max_sse_streams_per_principal)
        self.streams[principal] = self.streams.get(principal, 0) + 1
        self.total_streams += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.total_streams -= 1
            left = self.streams.get(principal, 1) - 1
            if left > 0:
                self.streams[principal] = left
            else:
                self.streams.pop(principal, None)

        return release

    def open_session(self, principal: str, slot: Slot = NO_SLOT) -> SessionTicket:
        live = self.live_sessions() if self.live_sessions is not None else None
        self._admitted += 1
        if live is not None and self._admitted % 256 == 0:
            self.prune(live)
        owned = self.sessions.get(principal, set())
        if live is not None:
            owned = {sid for sid in owned if sid in live}
        if owned:
            self.sessions[principal] = owned
        else:
            self.sessions.pop(principal, None)
        if len(owned) + self.pending.get(principal, 0) >= self.max_sessions_per_principal:
            raise E.RateLimited("too many open sessions for this principal: end one (DELETE) or let it expire",
                                retry_after=self.RETRY_AFTER_S, limit=self.max_sessions_per_principal)
        self.pending[principal] = self.pending.get(principal, 0) + 1
        return SessionTicket(self, principal, slot)

    def end_pending(self, principal: str) -> None:
        left = self.pending.get(principal, 1) - 1
        if left > 0:
            self.pending[principal] = left
        else:
            self.pending.pop(principal, None)

    def prune(self, live: Container[str]) -> None:
        for principal in list(self.sessions):
            kept = {sid for sid in self.sessions[principal] if sid in live}
            if kept:
                self.sessions[principal] = kept
            else:
                del self.sessions[principal]
