"""The approval desk over a real SQLite store and audit log, on trio's virtual clock: a held call
expires after its TTL, is approved while it waits, is consumed exactly once; the argument hash
binds an approval; approvers and callers are told apart; the core's pure rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.policy import approval_core as C
from northstar.policy import audit_records as R
from northstar.policy.approvals import ApprovalDesk
from northstar.policy.calls import CallResult, CallTool, Held
from northstar.policy.firearms import FirearmsService
from northstar.storage import Storage, open_store
from tests.pg import backend_url, require_backend

T0 = 1_900_000_000.0
TARGET = {"canonical_name": "echo.ping", "tool": "echo", "scope": "utility", "operation": "ping"}


def who(user: str, tenant: str = "acme") -> RequestContext:
    return RequestContext(request_id=f"r-{user}", tenant=tenant, user=user)


def held(ctx: RequestContext, arguments: dict[str, Any], *, wait: bool = True) -> Held:
    call = CallTool(ctx, "echo.ping", arguments, wait_approval=wait)
    return Held(call, None, R.base_record(ctx, "echo.ping"), dict(TARGET), [], "firearm.approve",  # type: ignore[arg-type]
                arguments, C.args_hash(arguments))


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only once the run is idle for a while: the store and the audit log
    commit in worker threads, whose work must not look like idleness (their own timeouts)."""
    return trio.testing.MockClock(autojump_threshold=0.3)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_store(f"sqlite:///{tmp_path / 'approvals.db'}") as s:
        yield s


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def approvals_backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
async def any_desk(approvals_backend: str, tmp_path: Path) -> AsyncIterator[ApprovalDesk]:
    """A desk on either backend (real time: the records and the conditional saves are what count)."""
    async with backend_url(approvals_backend, tmp_path) as (url, _schema), open_store(url) as s:
        yield await make_desk(s)


async def make_desk(storage: Storage) -> ApprovalDesk:
    firearms = FirearmsService(storage.store, clock=lambda: T0)
    await firearms.load()
    await firearms.require_approval("utility", actor="test")
    await firearms.grant("acme", "boss", "firearm.approve", granted_by="test")
    await firearms.grant("acme", "alice", "firearm.approve", granted_by="test")
    return ApprovalDesk(storage.store, storage.audit, firearms, ttl_s=600.0, poll_s=120.0,
                        clock=lambda: T0 + trio.current_time())


@pytest.fixture
async def desk(storage: Storage) -> ApprovalDesk:
    return await make_desk(storage)


async def test_a_waiting_call_expires_on_the_virtual_clock(desk: ApprovalDesk, virtual_clock: Any) -> None:
    start = trio.current_time()
    result = await desk.hold(held(who("alice"), {"message": "x"}))
    assert isinstance(result, CallResult) and isinstance(result.error, E.ApprovalExpired)
    assert trio.current_time() - start >= 600.0
    [view] = await desk.list(who("boss"), state="expired")
    assert view["arguments"] == {"message": "x"}
    with pytest.raises(E.ApprovalState):
        await desk.decide(who("boss"), view["id"], approve=True)


async def test_approved_while_waiting_runs_once(desk: ApprovalDesk, virtual_clock: Any) -> None:
    alice = who("alice")
    outcome: list[Any] = []
    async with trio.open_nursery() as nursery:
        async def wait() -> None:
            outcome.append(await desk.hold(held(alice, {"message": "go"})))

        nursery.start_soon(wait)
        await trio.sleep(30)
        [pending] = await desk.list(who("boss"), state="pending")
        with pytest.raises(E.ApprovalSelf):
            await desk.decide(alice, pending["id"], approve=True)
        with pytest.raises(E.NotFound):  # no grant: not theirs to see
            await desk.decide(who("carol"), pending["id"], approve=True)
        with pytest.raises(E.NotFound):  # another tenant
            await desk.decide(who("boss", "other"), pending["id"], approve=True)
        decided = await desk.decide(who("boss"), pending["id"], approve=True, reason="ok")
        assert decided["state"] == "approved" and decided["decided_by"] == "acme/boss"
    [ticket] = outcome
    assert isinstance(ticket, C.ApprovalTicket) and ticket.args_hash == C.args_hash({"message": "go"})
    assert trio.current_time() < 600.0
    await desk.consume(alice, ticket)
    with pytest.raises(E.ApprovalState):
        await desk.consume(alice, ticket)  # exactly once
    assert (await desk.get(alice, ticket.approval_id))["state"] == "consumed"


async def test_the_same_call_finds_its_approval_and_a_changed_one_does_not(any_desk: ApprovalDesk) -> None:
    desk = any_desk
    alice = who("alice")
    first = await desk.hold(held(alice, {"message": "a"}, wait=False))
    again = await desk.hold(held(alice, {"message": "a"}, wait=False))
    other = await desk.hold(held(alice, {"message": "b"}, wait=False))
    ids = [r.error.details["approval_id"] for r in (first, again, other)]  # type: ignore[union-attr]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith(C.match_prefix("acme/alice", "echo.ping", C.args_hash({"message": "a"})))
    await desk.decide(who("boss"), ids[0], approve=True)
    reissued = await desk.hold(held(alice, {"message": "a"}, wait=False))
    assert isinstance(reissued, C.ApprovalTicket) and reissued.approval_id == ids[0]
    rejected = await desk.decide(who("boss"), ids[2], approve=False, reason="no")
    assert rejected["state"] == "rejected"
    answer = await desk.hold(held(alice, {"message": "b"}, wait=False))
    assert isinstance(answer, CallResult) and answer.error.details["approval_id"] != ids[2]  # type: ignore[union-attr]


def test_hash_is_over_canonical_json() -> None:
    assert C.args_hash({"b": 1, "a": [1, "é"]}) == C.args_hash({"a": [1, "é"], "b": 1})
    assert C.args_hash({"a": 1}) != C.args_hash({"a": 1.5})


def test_the_sandbox_simulates_and_never_holds() -> None:
    step, trace = C.approval_step(approver="firearm.approve", simulated="approved", sandbox=True, ticket=None,
                                  digest="d")
    assert step == "run" and trace["simulated"] == "approved"
    step, _ = C.approval_step(approver="firearm.approve", simulated=None, sandbox=True, ticket=None, digest="d")
    assert isinstance(step, E.ApprovalPending)
    step, _ = C.approval_step(approver=None, simulated="rejected", sandbox=True, ticket=None, digest="d")
    assert isinstance(step, E.ApprovalRejected)
    step, _ = C.approval_step(approver="firearm.approve", simulated=None, sandbox=False,
                              ticket=C.ApprovalTicket("ap", "other"), digest="d")
    assert step == "hold"


async def test_waiting_calls_of_one_principal_are_capped(desk: ApprovalDesk, virtual_clock: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from northstar.policy import approvals

    monkeypatch.setattr(approvals, "MAX_WAITING_PER_PRINCIPAL", 1)
    alice = who("alice")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(desk.hold, held(alice, {"message": "first"}))
        await trio.sleep(1)
        second = await desk.hold(held(alice, {"message": "second"}))  # answered at once, not waiting
        assert isinstance(second, CallResult) and isinstance(second.error, E.ApprovalPending)
        assert trio.current_time() < 10
        other = await desk.hold(held(who("boss"), {"message": "x"}, wait=False))
        assert isinstance(other, CallResult)
        nursery.cancel_scope.cancel()
    assert desk.waiting() == {}


async def test_racing_decisions_and_consumes_have_one_winner(any_desk: ApprovalDesk) -> None:
    desk = any_desk
    await desk.firearms.grant("acme", "carol", "firearm.approve", granted_by="test")
    alice = who("alice")
    pending = await desk.hold(held(alice, {"message": "race"}, wait=False))
    approval_id = pending.error.details["approval_id"]  # type: ignore[union-attr]
    outcomes: list[str] = []

    async def decide(user: str, approve: bool) -> None:
        try:
            await desk.decide(who(user), approval_id, approve=approve)
            outcomes.append("won")
        except E.ApprovalState:
            outcomes.append("lost")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(decide, "boss", True)
        nursery.start_soon(decide, "carol", False)
    assert sorted(outcomes) == ["lost", "won"]
    again = await desk.hold(held(alice, {"message": "run"}, wait=False))
    approval_id = again.error.details["approval_id"]  # type: ignore[union-attr]
    await desk.decide(who("boss"), approval_id, approve=True)
    ticket = C.ApprovalTicket(approval_id, C.args_hash({"message": "run"}))
    consumed: list[str] = []

    async def consume() -> None:
        try:
            await desk.consume(alice, ticket)
            consumed.append("ran")
        except E.ApprovalState:
            consumed.append("refused")

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(consume)
    assert sorted(consumed) == ["ran", "refused", "refused"]
