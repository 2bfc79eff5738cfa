"""G2: a call in flight can be cancelled only by the principal (and session) that made it.

The repro: ``notifications/cancelled`` with ``requestId: 1``, sent by tenant t7 to
``/mcp/stateless`` (or to ``/mcp`` without a session), cancelled tenant t8's in-flight call
with id 1; t8 got an empty 204, its audit record said ``cancelled``, nothing recorded who
did it. Here, on every door, another principal's cancel leaves the call running to its
result, and a refused cancel that named a live call is audited once (sender, id, refused).
Two principals, raw HTTP and the legacy SSE stream, against a real gateway.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from tests.harness import GatewayProcess
from tests.reliability.kit import (
    ACCEPT_BOTH,
    HANDSHAKE,
    LegacySse,
    Session,
    audit,
    fresh,
    ident,
    mcp_headers,
    reply_of,
    rpc,
    wait_until,
)

SLEEP_S = 8  # long enough for the other principal's cancels to find the call in flight
CANCEL = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "mine now"}}


def sleep_call(rid: Any = 1, seconds: float = SLEEP_S) -> dict[str, Any]:
    return rpc("tools/call", {"name": "diagnostics__sleep", "arguments": {"seconds": seconds}}, rid)


def stateless_headers(tenant: str, user: str = "u") -> dict[str, str]:
    return {"Content-Type": "application/json", "Accept": "application/json", **ident(tenant, user)}


class InFlight(threading.Thread):
    """One blocking request on its own thread; ``response`` once it is answered."""

    def __init__(self, send: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.send = send
        self.response: Any = None

    def run(self) -> None:
        self.response = self.send()


def refused_records(gw: GatewayProcess, tenant: str) -> list[dict[str, Any]]:
    return [e for e in audit(gw.url, tenant=tenant) if e.get("event") == "cancel"]


def cancel_until_refused(gw: GatewayProcess, send_cancel: Callable[[], httpx2.Response], tenant: str) -> None:
    """The other principal sends cancels until one names the live call (its refusal is audited)."""
    def attempt() -> bool:
        resp = send_cancel()
        assert resp.status_code < 500, resp.text
        return bool(refused_records(gw, tenant))

    assert wait_until(attempt, SLEEP_S / 2, interval_s=0.1), "the cancel never named the live call"


def assert_refusal_recorded(gw: GatewayProcess, attacker: str, victim: str) -> None:
    records = refused_records(gw, attacker)
    assert len(records) == 1, records  # once per sender and call, however many it sent
    rec = records[0]
    assert (rec["decision"], rec["code"], rec["target_request_id"]) == ("deny", "not_owner", 1)
    assert rec["tenant"] == attacker and rec["principal"] == f"{attacker}/mallory"
    assert victim not in json.dumps(rec)  # the record tells the sender's tenant nothing of whose call it was


def assert_ran_to_its_result(reply: dict[str, Any]) -> None:
    assert reply["id"] == 1 and reply["result"]["structuredContent"] == {"slept": SLEEP_S}, reply


def assert_victim_audited_ok(gw: GatewayProcess, victim: str) -> None:
    records = [e for e in audit(gw.url, tenant=victim) if e.get("tool") == "diagnostics"]
    assert [r.get("outcome") for r in records] == ["ok"], records


@pytest.mark.parametrize("door", ["stateless", "mcp-no-session"])
def test_g2_another_principal_cannot_cancel_a_stateless_call(rgw: GatewayProcess, http: httpx2.Client,
                                                             door: str) -> None:
    victim, attacker = fresh("t8"), fresh("t7")
    call = InFlight(lambda: httpx2.post(f"{rgw.url}/mcp/stateless", json=sleep_call(), timeout=60,
                                        headers=stateless_headers(victim)))
    call.start()
    if door == "stateless":
        url, headers = f"{rgw.url}/mcp/stateless", stateless_headers(attacker, "mallory")
    else:  # /mcp without a session, handshake era: it named the same (session "", id 1) before
        url, headers = f"{rgw.url}/mcp", mcp_headers(attacker, "mallory", version=HANDSHAKE)
    cancel_until_refused(rgw, lambda: http.post(url, json=CANCEL, headers=headers), attacker)
    for _ in range(20):  # a flood naming the same call: refused, audited once
        assert http.post(url, json=CANCEL, headers=headers).status_code < 500
    call.join(timeout=SLEEP_S + 30)
    assert call.response is not None and call.response.status_code == 200, call.response
    assert_ran_to_its_result(call.response.json())
    assert_refusal_recorded(rgw, attacker, victim)
    assert_victim_audited_ok(rgw, victim)


def test_g2_another_principal_cannot_cancel_a_call_in_someone_elses_session(rgw: GatewayProcess,
                                                                           http: httpx2.Client) -> None:
    victim, attacker = fresh("t8"), fresh("t7")
    session = Session(http, rgw.url, victim).open()
    call = InFlight(lambda: httpx2.post(f"{rgw.url}/mcp", json=sleep_call(), headers=session.headers(), timeout=60))
    call.start()
    stolen = mcp_headers(attacker, "mallory", version=HANDSHAKE, session=session.id)  # it knows the session id
    cancel_until_refused(rgw, lambda: http.post(f"{rgw.url}/mcp", json=CANCEL, headers=stolen), attacker)
    answer = http.post(f"{rgw.url}/mcp", json=CANCEL, headers=stolen)
    assert answer.status_code == 404  # the session is not the sender's: as if it did not exist (C3)
    call.join(timeout=SLEEP_S + 30)
    assert call.response is not None and call.response.status_code == 200
    assert_ran_to_its_result(reply_of(call.response))
    assert_refusal_recorded(rgw, attacker, victim)
    assert_victim_audited_ok(rgw, victim)
    assert "result" in session.request("ping")
    session.delete()


def test_g2_legacy_sse_messages_of_another_principal_never_reach_the_session(rgw: GatewayProcess) -> None:
    victim, attacker = fresh("t8"), fresh("t7")
    with LegacySse(rgw, victim) as sse:
        accepted = sse.post(sleep_call())
        assert accepted.status_code == 202
        with httpx2.Client(timeout=30) as other:
            for _ in range(5):
                resp = other.post(f"{rgw.url}{sse.endpoint}", content=json.dumps(CANCEL),
                                  headers={"Content-Type": "application/json", **ident(attacker, "mallory")})
                assert resp.status_code == 404, resp.text
        assert_ran_to_its_result(sse.reply(1, timeout_s=SLEEP_S + 30))
    assert_victim_audited_ok(rgw, victim)


def test_g2_the_owner_still_cancels_its_own_stateless_call(rgw: GatewayProcess, http: httpx2.Client) -> None:
    owner = fresh("t8")
    call = InFlight(lambda: httpx2.post(f"{rgw.url}/mcp/stateless", json=sleep_call(seconds=60), timeout=90,
                                        headers=stateless_headers(owner)))
    call.start()

    def cancelled() -> bool:
        resp = http.post(f"{rgw.url}/mcp/stateless", json=CANCEL, headers=stateless_headers(owner))
        assert resp.status_code == 202, resp.text
        call.join(0.2)
        return not call.is_alive()

    assert wait_until(cancelled, 30, interval_s=0.1)
    assert call.response.status_code == 204 and call.response.content == b""
    assert wait_until(lambda: [e.get("outcome") for e in audit(rgw.url, tenant=owner)
                               if e.get("tool") == "diagnostics"] == ["cancelled"], 15)
    assert [e for e in audit(rgw.url, tenant=owner) if e.get("event") == "cancel"] == []  # its own: no refusal


def test_g2_cancels_naming_nothing_live_leave_no_trace(rgw: GatewayProcess, http: httpx2.Client) -> None:
    attacker = fresh("t7")
    headers = {**stateless_headers(attacker, "mallory"), "Accept": ACCEPT_BOTH}
    for rid in range(1, 51):
        msg = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 10_000 + rid}}
        assert http.post(f"{rgw.url}/mcp/stateless", json=msg, headers=headers).status_code == 202
    assert audit(rgw.url, tenant=attacker) == []
