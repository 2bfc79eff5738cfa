"""InFlight: calls are named by (session, JSON-RPC id) and owned; only the owner cancels."""

from __future__ import annotations

import trio

from northstar.mcp_gateway.transports.http.inflight import CANCELLED, REFUSED, UNKNOWN, InFlight


async def test_only_the_owner_cancels_and_a_refusal_is_reported_once_per_sender() -> None:
    calls = InFlight()
    victim = trio.CancelScope()
    token = calls.add("t8/u", "", 1, victim)
    assert calls.cancel("t7/mallory", "", 1) == (REFUSED, ["t8/u"])
    assert calls.cancel("t7/mallory", "", 1) == (REFUSED, [])  # a flood: reported once
    assert calls.cancel("t9/eve", "", 1) == (REFUSED, ["t8/u"])  # another sender: once more
    assert not victim.cancel_called
    assert calls.cancel("t8/u", "other-session", 1) == (UNKNOWN, [])  # the session is part of the name
    assert calls.cancel("t8/u", "", "1") == (UNKNOWN, [])  # so is the id's type
    assert calls.cancel("t8/u", "", 1) == (CANCELLED, [])
    assert victim.cancel_called
    calls.remove(token)
    assert len(calls) == 0 and calls.cancel("t8/u", "", 1) == (UNKNOWN, [])


async def test_the_same_id_in_flight_for_two_principals() -> None:
    calls = InFlight()
    a, b = trio.CancelScope(), trio.CancelScope()
    ta, tb = calls.add("t1/a", "", 7, a), calls.add("t2/b", "", 7, b)
    assert len(calls) == 2
    assert calls.cancel("t2/b", "", 7) == (CANCELLED, [])
    assert b.cancel_called and not a.cancel_called
    calls.remove(tb)
    assert calls.cancel("t2/b", "", 7) == (REFUSED, ["t1/a"])
    calls.remove(ta)
    assert len(calls) == 0
