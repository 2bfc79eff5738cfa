"""The composition root contains every subsystem: a crash storm takes down only that subsystem.

A real runtime (SQLite store, every child of the tree) with a fault switch in one subsystem:
while it is on, each call crashes that actor, as an internal fault would. Past the
subsystem's restart intensity it is down: the root supervisor (which used to give up and end
the process) keeps running, the gateway answers 503 for what needs the subsystem and serves
everything else, ``/health`` answers 503 naming it; once the fault is gone, the subsystem
is started again after its backoff and ``/health`` is 200 again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import actors
from northstar.common import errors as E
from northstar.common.config import Settings
from northstar.common.identity import RequestContextBuilder, Transport
from northstar.mcp_gateway.transports.rest.app import build_rest_app
from northstar.policy.gate_chain import GateChain
from northstar.runtime import Runtime
from northstar.runtime import root as runtime_module
from northstar.storage.actor import Check, StoreActor

CTX = RequestContextBuilder().from_headers([("X-Tenant-Id", "t1"), ("X-User-Id", "u")], transport=Transport.INTERNAL)


class Fault:
    on = False


class FaultyStore(StoreActor):
    async def handle(self, msg: Any) -> Any:
        if Fault.on and isinstance(msg, Check):
            raise RuntimeError("internal fault in the store actor")
        return await super().handle(msg)


class FaultyGateChain(GateChain):
    def answer_now(self, msg: Any) -> Any:
        if Fault.on:
            raise RuntimeError("internal fault in the gate chain")
        return super().answer_now(msg)


class FaultyRuntime(Runtime):
    def make_store_actor(self) -> StoreActor:
        return FaultyStore(self.services.storage.store)

    def make_gate_chain(self) -> GateChain:
        chain = super().make_gate_chain()
        chain.__class__ = FaultyGateChain
        return chain


@pytest.fixture
async def rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FaultyRuntime]:
    # A short backoff keeps the test short (the wiring, not the delay, is under test here), yet
    # long enough for the checks made while the subsystem is down.
    monkeypatch.setattr(runtime_module, "SUBSYSTEM_BACKOFF", actors.Backoff(initial=3.0, maximum=3.0))
    Fault.on = False
    runtime = FaultyRuntime(Settings(data_dir=tmp_path, log_level="WARNING"))
    with trio.fail_after(60):
        async with runtime.running():
            yield runtime
    Fault.on = False


async def crash_storm(rt: Runtime, subsystem: str) -> None:
    """Crash the subsystem until it is down (its intensity: 5 restarts in 30 s)."""
    svc = rt.services
    Fault.on = True
    for _ in range(runtime_module.SUBSYSTEM_RESTARTS + 1):
        if subsystem == "store":
            with pytest.raises(E.StoreUnavailable):
                await svc.store.check()
        else:
            with pytest.raises(E.ServiceUnavailable):
                await svc.gateway.call_tool(CTX, "echo.ping", {"message": "x"})
        await trio.lowlevel.checkpoint()
    Fault.on = False


async def until(check: Any) -> None:
    with trio.fail_after(10):
        while not check():
            await trio.sleep(0.01)


async def health(client: Any) -> tuple[int, dict[str, Any]]:
    response = await client.get("/health")
    return response.status_code, await response.get_json()


@pytest.mark.parametrize("subsystem", ["store", "gate_chain"])
async def test_a_crash_storm_downs_one_subsystem_and_it_comes_back(rt: FaultyRuntime, subsystem: str) -> None:
    svc = rt.services
    client = build_rest_app(svc).test_client()
    assert rt.subsystems()["subsystems"] == dict.fromkeys(
        ["store", "policy.firearms", "gate_chain", "workbench.drafts", "workbench.publisher", "workbench.registry",
         "mcp.sessions"], "up")
    assert (await health(client))[0] == 200
    await crash_storm(rt, subsystem)
    await until(lambda: rt.subsystems()["subsystems"][subsystem] == "down")

    assert rt.root is not None and rt.root.stats().running  # the process would have exited here
    others = {k: v for k, v in rt.subsystems()["subsystems"].items() if k != subsystem}
    assert set(others.values()) == {"up"}, others
    status, body = await health(client)
    assert status == 503 and body["down"] == [subsystem] and body["status"] == "degraded"
    if subsystem == "store":  # what needs the store is 503; the rest is served
        listed = await svc.gateway.call_tool(CTX, "media_v2.list_assets", {})
        assert isinstance(listed.error, E.StoreUnavailable)
        assert (await svc.gateway.call_tool(CTX, "echo.ping", {"message": "x"})).ok
    else:
        with pytest.raises(E.ServiceUnavailable):
            await svc.gateway.call_tool(CTX, "echo.ping", {"message": "x"})
        await svc.store.check()

    await until(lambda: rt.subsystems()["subsystems"][subsystem] == "up")  # after its backoff
    status, body = await health(client)
    assert status == 200 and body["down"] == [], body
    assert (await svc.gateway.call_tool(CTX, "echo.ping", {"message": "back"})).ok
