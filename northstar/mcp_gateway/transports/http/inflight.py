"""The ``tools/call`` requests in flight on the Streamable HTTP doors, and who may cancel them.

A JSON-RPC id is chosen by the client, so it names a call only together with the session it
was sent on (none for ``/mcp/stateless``) and the principal that sent it: two clients both
use id 1 all the time. :class:`InFlight` keeps each call's cancel scope under
``(session, id)`` with its owner; :meth:`InFlight.cancel` cancels only the sender's own calls.
A cancel that names someone else's live call is refused, and its owners are handed back once
per sender and call (the fast path audits that); a cancel naming nothing live is ignored
without a trace, so a flood of them costs nothing but the requests.

Pure bookkeeping, no I/O: registering and unregistering a call is a dict operation each.
"""

from __future__ import annotations

from typing import Any

import trio

Key = tuple[str, Any]  # (session id or "", JSON-RPC id)


class Call:
    """One call in flight (the token :meth:`InFlight.add` hands back for :meth:`InFlight.remove`)."""

    __slots__ = ("key", "principal", "refused", "scope")

    def __init__(self, key: Key, principal: str, scope: trio.CancelScope) -> None:
        self.key = key
        self.principal = principal
        self.scope = scope
        self.refused: set[str] | None = None  # senders already reported for this call


CANCELLED, REFUSED, UNKNOWN = "cancelled", "refused", "unknown"


class InFlight:
    """Cancel scopes of calls in flight, by ``(session, JSON-RPC id)`` and owner.

    A key holds one :class:`Call`, or a list of them when the same id is in flight twice
    (stateless clients, or a confused one): the common case allocates no list.
    """

    def __init__(self) -> None:
        self._calls: dict[Key, Call | list[Call]] = {}

    def __len__(self) -> int:
        return sum(len(v) if isinstance(v, list) else 1 for v in self._calls.values())

    def add(self, principal: str, session: str, rid: Any, scope: trio.CancelScope) -> Call:
        """Register a call; give the returned token to :meth:`remove` when it ends."""
        key = (session, rid)
        call = Call(key, principal, scope)
        held = self._calls.setdefault(key, call)
        if held is not call:
            if isinstance(held, list):
                held.append(call)
            else:
                self._calls[key] = [held, call]
        return call

    def remove(self, call: Call) -> None:
        held = self._calls.get(call.key)
        if held is call:
            del self._calls[call.key]
        elif isinstance(held, list):
            held.remove(call)
            if len(held) == 1:
                self._calls[call.key] = held[0]

    def cancel(self, principal: str, session: str, rid: Any) -> tuple[str, list[str]]:
        """Cancel ``principal``'s calls named ``(session, rid)``.

        Returns (``"cancelled"`` | ``"refused"`` | ``"unknown"``, owners to report): ``refused``
        when the only live calls so named are someone else's; their owners are listed the
        first time this sender names each such call (empty afterwards: report once).
        """
        held = self._calls.get((session, rid))
        if held is None:
            return UNKNOWN, []
        calls = held if isinstance(held, list) else [held]
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
