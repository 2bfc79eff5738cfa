"""The change bell: a save on one store (another replica) wakes the other's watchers at once
through PostgreSQL LISTEN/NOTIFY; other schemas' saves do not; polling is the fallback."""

from __future__ import annotations

import pytest
import trio
import trio_asyncio

from northstar.storage import open_store
from northstar.storage.changes import ChangeBell, parse_payload, payload
from tests.pg import base_url, drop_schema, fresh_schema, pg_fetch, pg_unavailable_reason, schema_url


def test_payload_round_trip() -> None:
    assert parse_payload(payload("s1", "upstreams")) == ("s1", "upstreams")
    assert parse_payload("garbage") is None


async def test_a_ring_wakes_only_the_kinds_subscribed_and_is_kept_until_waited() -> None:
    bell = ChangeBell()
    with bell.subscribe(["a"]) as a, bell.subscribe(None) as every:
        bell.ring("b")
        assert not await a.wait(0) and await every.wait(0)
        bell.ring("a")  # rung while nobody waits: the next wait returns at once
        assert await a.wait(0) and not await a.wait(0)
        bell.ring(None)
        assert await a.wait(0)


async def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


@pytest.mark.postgres
async def test_a_save_on_one_replica_rings_the_other_and_not_another_schema() -> None:
    if (reason := pg_unavailable_reason()) is not None:
        pytest.skip(reason)
    schema, other = fresh_schema(), fresh_schema()
    async with trio_asyncio.open_loop():
        try:
            async with open_store(schema_url(base_url(), schema)) as a, \
                    open_store(schema_url(base_url(), schema)) as b, \
                    open_store(schema_url(base_url(), other)) as c:
                await wait_until(lambda: a.changes.connected and b.changes.connected and c.changes.connected)
                with b.changes.subscribe(["upstreams"]) as sub, c.changes.subscribe(None) as elsewhere:
                    await sub.wait(0)
                    await elsewhere.wait(0)  # the rings of connecting
                    start = trio.current_time()
                    await a.store.save("_global", "upstreams", "x", {"v": 1})
                    assert await sub.wait(5.0)
                    print(f"\nnotify latency {1000 * (trio.current_time() - start):.1f} ms")
                    assert not await elsewhere.wait(0.2)
        finally:
            with trio.CancelScope(shield=True):
                await drop_schema(base_url(), schema)
                await drop_schema(base_url(), other)


@pytest.mark.postgres
async def test_a_lost_listener_reconnects_and_rings_every_watcher() -> None:
    if (reason := pg_unavailable_reason()) is not None:
        pytest.skip(reason)
    schema = fresh_schema()
    async with trio_asyncio.open_loop():
        try:
            async with open_store(schema_url(base_url(), schema)) as a, open_store(schema_url(base_url(), schema)) as b:
                await wait_until(lambda: b.changes.connected)
                with b.changes.subscribe(["upstreams"]) as sub:
                    await sub.wait(0)
                    killed = await pg_fetch(base_url(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                            " WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                                            f"northstar/{schema}")
                    assert len(killed) == 2  # both stores' listeners
                    assert await sub.wait(10.0)  # reconnected: rung for what it may have missed
                    await wait_until(lambda: b.changes.connected)
                    await a.store.save("_global", "upstreams", "y", {"v": 1})
                    assert await sub.wait(5.0)
        finally:
            with trio.CancelScope(shield=True):
                await drop_schema(base_url(), schema)
