"""The gate chain actor with a controllable audit log: records per decision, decision before
side effects, and failing closed (audit or policy store unavailable) without crashing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import actors
from northstar.common import errors as E
from northstar.common.errors import PolicyUnavailable
from northstar.common.identity import RequestContext, Transport
from northstar.mcp_gateway.tools.actor import Invoke, InvokeResult
from northstar.mcp_gateway.tools.catalog import Catalog
from northstar.mcp_gateway.tools.echo import ECHO
from northstar.mcp_gateway.tools.media_v2 import MEDIA_V2, AssetOut
from northstar.policy.calls import CallResult, CallTool
from northstar.policy.firearms import FirearmsService
from northstar.policy.gate_chain import GateChain, GateChainConfig, decision_parts
from northstar.storage import AuditEntry, open_store

FA = "firearm.media.write"
WRITE_ARGS = {"name": "a.txt", "mime_type": "text/plain", "content_text": "hi"}


class FakeAudit:
    """An audit log that commits in memory, or fails like a locked database when ``failing``."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.failing = False
        self._healthy = True
        self.gate: trio.Event | None = None  # when set, appends wait for it

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def append(self, record: dict[str, Any]) -> AuditEntry:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.failing:
            self._healthy = False
            raise E.AuditUnavailable("the audit log could not commit", retry_after=1)
        self._healthy = True
        self.records.append(record)
        return AuditEntry(len(self.records), "ts", record, "p", "h")

    def events(self) -> list[tuple[str, str | None]]:
        return [(r["event"], r.get("decision")) for r in self.records]


class FakeToolRef:
    """Stands in for a tool actor: counts invocations, notes what the audit log held then."""

    def __init__(self, audit: FakeAudit) -> None:
        self.audit = audit
        self.calls: list[tuple[str, int]] = []

    async def call(self, msg: Invoke, timeout: float) -> InvokeResult:
        self.calls.append((msg.operation, len(self.audit.records)))
        if msg.operation == "ping":
            return InvokeResult(ECHO.find("ping")[1].output_model(message=msg.arguments.message,  # type: ignore[index]
                                                                   received_at="now"))
        return InvokeResult(AssetOut.model_construct(asset_id="a" * 32, name="a.txt"))


class Rig:
    def __init__(self, chain: GateChain, audit: FakeAudit, ref: FakeToolRef, firearms: FirearmsService) -> None:
        self.chain, self.audit, self.ref, self.firearms = chain, audit, ref, firearms

    async def call(self, name: str, args: dict[str, Any] | None, user: str = "alice") -> CallResult:
        ctx = RequestContext(request_id=f"req-{len(self.audit.records)}", tenant="acme", user=user,
                             transport=Transport.HTTP)
        return await self.chain.handle(CallTool(ctx, name, args))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_store(f"sqlite:///{tmp_path / 'gc.db'}") as storage:
        firearms = FirearmsService(storage.store)
        await firearms.load()
        await firearms.bind("media.write", FA, actor="t")
        audit = FakeAudit()
        ref = FakeToolRef(audit)
        catalog = Catalog()
        catalog.add(ECHO, ref)
        catalog.add(MEDIA_V2, ref)
        chain = GateChain(catalog, firearms, audit, *decision_parts(GateChainConfig(), audit))  # type: ignore[arg-type]
        yield Rig(chain, audit, ref, firearms)


async def test_a_denied_write_leaves_one_deny_record_and_never_runs(rig: Rig) -> None:
    result = await rig.call("media_v2.create_asset", WRITE_ARGS)
    assert not result.ok and isinstance(result.error, E.FirearmRequired)
    assert rig.ref.calls == []
    assert rig.audit.events() == [("decision", "deny")]
    rec = rig.audit.records[0]
    assert (rec["gate"], rec["code"], rec["scope"], rec["firearm"]) == ("firearm", "firearm_required",
                                                                         "media.write", FA)
    assert result.audit_seq == 1


@pytest.mark.parametrize(("name", "args", "gate"), [
    ("no.such_tool", {}, "resolve"),
    ("media_v2.create_asset", {"name": 1}, "firearm"),  # unlicensed: refused before its input is read
    ("echo.ping", {"message": 1}, "input"),
])
async def test_every_denial_is_one_record(rig: Rig, name: str, args: dict[str, Any], gate: str) -> None:
    result = await rig.call(name, args)
    assert not result.ok and rig.ref.calls == []
    assert rig.audit.events() == [("decision", "deny")] and rig.audit.records[0]["gate"] == gate


async def test_an_allowed_write_commits_its_decision_before_the_tool_runs(rig: Rig) -> None:
    await rig.firearms.grant("acme", "alice", FA, granted_by="t")
    result = await rig.call("media_v2.create_asset", WRITE_ARGS)
    assert result.ok, result.error
    assert rig.ref.calls == [("create_asset", 1)]  # one record (the decision) existed when it ran
    assert rig.audit.events() == [("decision", "allow"), ("outcome", None)]
    assert rig.audit.records[1]["decision_seq"] == 1 and rig.audit.records[1]["outcome"] == "ok"


async def test_a_read_writes_one_record_after_it_ran(rig: Rig) -> None:
    result = await rig.call("echo.ping", {"message": "x"})
    assert result.ok
    assert rig.ref.calls == [("ping", 0)]
    assert rig.audit.events() == [("decision", "allow")]
    assert rig.audit.records[0]["outcome"] == "ok"


async def test_unavailable_audit_refuses_before_anything_runs(rig: Rig) -> None:
    await rig.firearms.grant("acme", "alice", FA, granted_by="t")
    rig.audit.failing = True
    for name, args in (("media_v2.create_asset", WRITE_ARGS), ("media_v2.create_asset", {}), ("echo.ping", {})):
        result = await rig.call(name, args)
        assert not result.ok and isinstance(result.error, E.AuditUnavailable), (name, result.error)
        assert result.error.http_status == 503 and result.error.retry_after == 1
    assert rig.ref.calls == [] and rig.audit.records == []


async def test_a_read_whose_record_fails_is_withheld(rig: Rig) -> None:
    rig.audit.failing = True
    rig.audit._healthy = True  # the failure is discovered only when the read's record is written
    result = await rig.call("echo.ping", {"message": "secret"})
    assert not result.ok and isinstance(result.error, E.AuditUnavailable)
    assert result.output is None


async def test_the_audit_log_recovers_through_probe_calls(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    interval = rig.chain.admission.probe_interval_s
    rig.audit.failing = True
    assert isinstance((await rig.call("media_v2.create_asset", WRITE_ARGS)).error, E.AuditUnavailable)
    assert not rig.audit.healthy
    refused = await rig.call("echo.ping", {})  # within the probe interval: refused at once
    assert isinstance(refused.error, E.AuditUnavailable) and refused.error.retry_after == 1
    await trio.sleep(interval)
    failed_probe = await rig.call("echo.ping", {})  # a probe, but the log is still down
    assert isinstance(failed_probe.error, E.AuditUnavailable)
    assert isinstance((await rig.call("echo.ping", {})).error, E.AuditUnavailable)
    assert rig.ref.calls == []  # nothing ran while the log was down, not even the reads

    rig.audit.failing = False  # the database is back; only a call can find that out
    assert isinstance((await rig.call("echo.ping", {})).error, E.AuditUnavailable)
    await trio.sleep(interval)
    rig.audit.gate = trio.Event()
    results: dict[str, CallResult] = {}

    async def one(key: str) -> None:
        results[key] = await rig.call("echo.ping", {"message": key})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "probe")
        await trio.testing.wait_all_tasks_blocked()
        await one("meanwhile")  # one probe at a time: refused at once while it is in flight
        rig.audit.gate.set()
    assert isinstance(results["meanwhile"].error, E.AuditUnavailable)
    assert results["probe"].ok
    assert rig.ref.calls == [("ping", 1)]  # the probe's decision was committed before it ran
    assert rig.audit.events() == [("decision", "allow"), ("outcome", None)]
    assert rig.audit.healthy
    assert (await rig.call("echo.ping", {})).ok
    assert rig.audit.events()[-1] == ("decision", "allow")  # healthy again: reads write one record


async def test_stale_policy_refuses_and_records_it(rig: Rig) -> None:
    rig.firearms._fresh_at = trio.current_time() - 3600
    result = await rig.call("echo.ping", {})
    assert not result.ok and isinstance(result.error, PolicyUnavailable)
    assert rig.ref.calls == []
    assert rig.audit.events() == [("decision", "deny")]
    assert rig.audit.records[0]["code"] == "policy_unavailable"


async def test_a_refusal_does_not_crash_the_actor(rig: Rig) -> None:
    """Through the actor runtime: a refusal is an answer. Raised, it would crash the actor and
    cancel every other in-flight call."""
    rig.chain.admission.probe_interval_s = 0.0
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actors.spawn, lambda: rig.chain, 16)
        ctx = RequestContext(request_id="r", tenant="acme", user="alice")
        rig.audit.failing = True
        refused = await ref.call(CallTool(ctx, "echo.ping", {}), timeout=10)
        assert isinstance(refused.error, E.AuditUnavailable)
        rig.audit.failing = False
        rig.firearms._fresh_at = trio.current_time() - 3600
        stale = await ref.call(CallTool(ctx, "echo.ping", {}), timeout=10)
        assert isinstance(stale.error, PolicyUnavailable)
        await rig.firearms.load()
        ok = await ref.call(CallTool(ctx, "echo.ping", {}), timeout=10)
        assert ok.ok
        assert ref.stats().crashes == 0
        nursery.cancel_scope.cancel()


async def test_concurrent_calls_cannot_overrun_the_in_flight_limit(rig: Rig) -> None:
    await rig.firearms.grant("acme", "alice", FA, granted_by="t")
    rig.chain.admission.limits.max_in_flight = 2
    rig.audit.gate = trio.Event()  # hold every decision record so the calls overlap
    results: list[CallResult] = []

    async def one() -> None:
        results.append(await rig.call("media_v2.create_asset", WRITE_ARGS))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            rig.audit.gate.set()
    codes = sorted("ok" if r.ok else r.error.code for r in results)  # type: ignore[union-attr]
    assert codes == ["ok", "ok", "rate_limited", "rate_limited", "rate_limited"]
    assert rig.chain.admission.limits.in_flight == {}
