"""The ``tools/call`` requests in flight on the Streamable HTTP doors, and who may cancel them.

A JSON-RPC id is chosen by the client, so it names a call only together with the session it
was sent on (none for ``/mcp/stateless``) and the principal that sent it: two clients both
use id 1 all the time. :class:`InFlight` keeps each call's cancel scope under
``(session, id)`` with its owner; :meth:`InFlight.cancel` cancels only the sender's own calls.
A cancel that names someone else's live call is refused and reported once per sender and
call (:attr:`InFlight.on_refused`, which the gateway audits); a cancel naming nothing live is
ignored without a trace, so a flood of them costs nothing but the requests.

Pure bookkeeping, no I/O: registering and unregistering a call is a dict operation each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import trio

Key = tuple[str, Any]  # (session id or "", JSON-RPC id)


class _Call:
    __slots__ = ("principal", "refused", "scope")

    def __init__(self, principal: str, scope: trio.CancelScope) -> None:
        self.principal = principal
        self.scope = scope
        self.refused: set[str] | None = None  # senders already reported for this call


CANCELLED, REFUSED, UNKNOWN = "cancelled", "refused", "unknown"


class InFlight:
    """Cancel scopes of calls in flight, by ``(session, JSON-RPC id)`` and owner."""

    def __init__(self) -> None:
        self._calls: dict[Key, list[_Call]] = {}

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._calls.values())

    @contextlib.contextmanager
    def track(self, principal: str, session: str, rid: Any, scope: trio.CancelScope) -> Iterator[None]:
        """Register a call for the duration of the block."""
        key = (session, rid)
        call = _Call(principal, scope)
        calls = self._calls.get(key)
        if calls is None:
            self._calls[key] = [call]
        else:  # the same id twice at once: stateless clients, or a confused one
            calls.append(call)
        try:
            yield
        finally:
            calls = self._calls.get(key)
            if calls is not None:
                calls.remove(call)
                if not calls:
                    del self._calls[key]

    def cancel(self, principal: str, session: str, rid: Any) -> tuple[str, list[str]]:
        """Cancel ``principal``'s calls named ``(session, rid)``.

        Returns (``"cancelled"`` | ``"refused"`` | ``"unknown"``, owners to report): ``refused``
        when the only live calls so named are someone else's; their owners are listed the
        first time this sender names each such call (empty afterwards: report once).
        """
        calls = self._calls.get((session, rid))
        if not calls:
            return UNKNOWN, []
        own = [call for call in calls if call.principal == principal]
        for call in own:
            call.scope.cancel()
        if own:
            return CANCELLED, []
        owners = []
        for call in calls:
            if call.refused is None:
                call.refused = set()
            if principal not in call.refused:
                call.refused.add(principal)
                owners.append(call.principal)
        return REFUSED, owners
