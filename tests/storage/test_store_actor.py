"""StoreActor / StoreClient: the store behind a supervised actor, errors translated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import actors
from northstar.common.errors import Conflict, StoreUnavailable, ValidationFailed
from northstar.storage import Storage
from northstar.storage.actor import Check, Get, Save, StoreActor, StoreClient
from northstar.storage.base import VersionedStore
from northstar.storage.records import Record

K = "kpi_bindings"


@asynccontextmanager
async def supervised(store: Any, *, timeout: float = 15.0) -> AsyncIterator[tuple[StoreClient, actors.Supervisor]]:
    sup = actors.Supervisor("root", [actors.actor_child("store", lambda: StoreActor(store))],
                            max_restarts=5, period=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref: Any = sup.get("store")
        yield StoreClient(ref, timeout=timeout), sup
        with trio.move_on_after(5):
            await sup.stop()
        nursery.cancel_scope.cancel()


@pytest.fixture
async def client(storage: Storage) -> AsyncIterator[StoreClient]:
    async with supervised(storage.store) as (store_client, _):
        yield store_client


async def test_round_trip_through_the_actor(client: StoreClient) -> None:
    assert isinstance(client, VersionedStore)
    r1 = await client.save("acme", K, "t:a", {"x": 1}, actor="alice")
    r2 = await client.save("acme", K, "t:a", {"x": 2}, expected_version=1)
    await client.save("acme", K, "t:b", {"x": 3})
    assert await client.get("acme", K, "t:a") == r2
    assert await client.get("acme", K, "t:a", 1) == r1
    assert [r.resource_id for r in await client.list("acme", K, prefix="t:", limit=10)] == ["t:a", "t:b"]
    assert [r.version for r in await client.history("acme", K, "t:a")] == [1, 2]
    events = await client.changes_since(0, [K])
    assert [(e.resource_id, e.version) for e in events] == [("t:a", 1), ("t:a", 2), ("t:b", 1)]
    await client.check()
    await client.close()


async def test_deliberate_errors_are_replies_not_crashes(client: StoreClient) -> None:
    await client.save("acme", K, "t:a", {"x": 1})
    with pytest.raises(Conflict) as info:
        await client.save("acme", K, "t:a", {"x": 2}, expected_version=0)
    assert info.value.details["current_version"] == 1
    with pytest.raises(ValidationFailed):
        await client.save("acme", "Not A Kind", "x", {})
    assert client.ref.stats().crashes == 0
    assert (await client.get("acme", K, "t:a")) is not None


class FlakyStore:
    """A store that blocks ``get`` on ``gate`` and crashes on ``check``."""

    def __init__(self) -> None:
        self.gate = trio.Event()

    async def get(self, *args: Any) -> Record | None:
        await self.gate.wait()
        return None

    async def check(self) -> None:
        raise RuntimeError("bug")


async def test_runtime_errors_become_store_unavailable() -> None:
    flaky = FlakyStore()
    with trio.fail_after(10):
        async with supervised(flaky, timeout=0.2) as (client, sup):
            # The answer names no actor and no exception type; the cause stays on the chain.
            with pytest.raises(StoreUnavailable, match=r"^the store is unavailable$") as timed_out:
                await client.get("acme", K, "x")
            assert isinstance(timed_out.value.__cause__, actors.CallTimeout)
            with pytest.raises(StoreUnavailable) as crashed:  # then restarted
                await client.check()
            assert isinstance(crashed.value.__cause__, actors.ActorCrashed)
            assert "RuntimeError" not in crashed.value.message
            flaky.gate.set()
            assert await client.get("acme", K, "x") is None
            assert client.ref.stats().restarts == 1
            await sup.stop()
            with pytest.raises(StoreUnavailable) as stopped:
                await client.get("acme", K, "x")
            assert isinstance(stopped.value.__cause__, actors.ActorStopped)


async def test_messages_are_frozen_values() -> None:
    msg = Save("acme", K, "r", {"x": 1}, expected_version=0)
    with pytest.raises(AttributeError):
        msg.tenant = "other"  # type: ignore[misc]
    assert Get("a", K, "r") == Get("a", K, "r") and Check() == Check()
