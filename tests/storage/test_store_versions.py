"""The versioned store's behaviour, on both backends (see conftest: ``storage`` is parametrized)."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

from northstar.common.errors import Conflict, ValidationFailed
from northstar.storage import Storage

K = "workbench_drafts"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def test_save_creates_contiguous_versions_all_readable(storage: Storage) -> None:
    store = storage.store
    r1 = await store.save("acme", K, "d1", {"n": 1}, actor="alice")
    r2 = await store.save("acme", K, "d1", {"n": 2}, actor="bob")
    assert (r1.version, r2.version) == (1, 2)
    assert r2.change_id > r1.change_id
    assert TS_RE.match(r1.created_at) and r1.created_at <= r2.created_at
    assert await store.get("acme", K, "d1", 1) == r1
    assert await store.get("acme", K, "d1", 2) == r2
    assert await store.get("acme", K, "d1") == r2
    assert (r1.actor, r2.actor) == ("alice", "bob")
    assert await store.get("acme", K, "d1", 3) is None
    assert await store.get("acme", K, "nope") is None


async def test_history_lists_every_version_ascending(storage: Storage) -> None:
    for n in range(1, 6):
        await storage.store.save("acme", K, "d1", {"n": n})
    history = await storage.store.history("acme", K, "d1")
    assert [r.version for r in history] == [1, 2, 3, 4, 5]
    assert [r.data for r in history] == [{"n": n} for n in range(1, 6)]
    assert await storage.store.history("acme", K, "other") == []


async def test_tombstone_deletes_but_keeps_history(storage: Storage) -> None:
    store = storage.store
    await store.save("acme", K, "d1", {"n": 1})
    await store.save("acme", K, "d2", {"n": 1})
    tomb = await store.save("acme", K, "d1", None, expected_version=1)
    assert tomb.version == 2 and tomb.data is None and tomb.deleted
    latest = await store.get("acme", K, "d1")
    assert latest is not None and latest.data is None
    assert [r.resource_id for r in await store.list("acme", K)] == ["d2"]
    assert [r.resource_id for r in await store.list("acme", K, include_deleted=True)] == ["d1", "d2"]
    revived = await store.save("acme", K, "d1", {"n": 3}, expected_version=2)
    assert revived.version == 3
    assert [r.data for r in await store.history("acme", K, "d1")] == [{"n": 1}, None, {"n": 3}]


async def test_list_returns_latest_versions_with_keyset_pagination(storage: Storage) -> None:
    store = storage.store
    ids = [f"r{n:02d}" for n in range(25)]
    for rid in reversed(ids):
        await store.save("acme", K, rid, {"id": rid, "v": 1})
    await store.save("acme", K, "r03", {"id": "r03", "v": 2})
    seen, after = [], None
    while page := await store.list("acme", K, after=after, limit=10):
        seen.extend(page)
        after = page[-1].resource_id
    assert [r.resource_id for r in seen] == ids
    assert next(r for r in seen if r.resource_id == "r03").version == 2


async def test_list_prefix_is_exact_and_case_sensitive(storage: Storage) -> None:
    store = storage.store
    for rid in ["tool:a", "tool:b", "tool_x:a", "toolxa", "Tool:c", "tool%:d", "tool", "é:1", "z:1"]:
        await store.save("acme", K, rid, {})

    async def ids(prefix: str, **kw: object) -> list[str]:
        return [r.resource_id for r in await store.list("acme", K, prefix=prefix, **kw)]  # type: ignore[arg-type]

    assert await ids("tool:") == ["tool:a", "tool:b"]
    assert await ids("tool_") == ["tool_x:a"]          # "_" is not a wildcard
    assert await ids("tool%") == ["tool%:d"]           # nor "%"
    assert await ids("Tool") == ["Tool:c"]
    assert await ids("tool:", after="tool:a") == ["tool:b"]
    assert await ids("é") == ["é:1"]
    # byte order on both backends: "z" sorts before "é"
    assert [r.resource_id for r in await store.list("acme", K)][-2:] == ["z:1", "é:1"]


async def test_tenants_never_see_each_others_data(storage: Storage) -> None:
    store = storage.store
    await store.save("acme", K, "shared-name", {"owner": "acme"})
    await store.save("acme", K, "shared-name", {"owner": "acme", "v": 2})
    await store.save("globex", K, "shared-name", {"owner": "globex"})
    await store.save("acme", K, "acme-only", {"owner": "acme"})
    globex = await store.get("globex", K, "shared-name")
    assert globex is not None and globex.version == 1 and globex.data == {"owner": "globex"}
    assert await store.get("globex", K, "acme-only") is None
    assert await store.get("globex", K, "shared-name", 2) is None
    assert [r.data for r in await store.list("globex", K)] == [{"owner": "globex"}]
    assert [r.tenant for r in await store.history("globex", K, "shared-name")] == ["globex"]
    assert {r.tenant for r in await store.list("acme", K)} == {"acme"}
    assert await store.list("initech", K) == []


async def test_expected_version_is_enforced(storage: Storage) -> None:
    store = storage.store
    await store.save("acme", K, "d1", {"n": 1}, expected_version=0)
    with pytest.raises(Conflict) as info:
        await store.save("acme", K, "d1", {"n": 2}, expected_version=0)
    assert info.value.details["current_version"] == 1
    with pytest.raises(Conflict) as info:
        await store.save("acme", K, "d1", {"n": 2}, expected_version=5)
    assert info.value.details["current_version"] == 1
    with pytest.raises(Conflict) as info:
        await store.save("acme", K, "new", {"n": 1}, expected_version=1)
    assert info.value.details["current_version"] == 0
    assert (await store.save("acme", K, "d1", {"n": 2}, expected_version=1)).version == 2


@pytest.mark.parametrize("existing", [False, True], ids=["create", "update"])
async def test_100_concurrent_saves_one_wins_99_conflict(storage: Storage, existing: bool) -> None:
    store = storage.store
    if existing:
        await store.save("acme", K, "hot", {"n": 0})
    expected = 1 if existing else 0
    wins, conflicts = [], []

    async def attempt(n: int) -> None:
        try:
            wins.append(await store.save("acme", K, "hot", {"n": n}, expected_version=expected))
        except Conflict as exc:
            conflicts.append(exc.details["current_version"])

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(attempt, n)
    assert len(wins) == 1 and len(conflicts) == 99
    assert set(conflicts) == {expected + 1}
    assert [r.version for r in await store.history("acme", K, "hot")] == list(range(1, expected + 2))


async def test_unconditional_concurrent_saves_all_land_contiguously(storage: Storage) -> None:
    async def save(n: int) -> None:
        await storage.store.save("acme", K, "busy", {"n": n})

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(save, n)
    history = await storage.store.history("acme", K, "busy")
    assert [r.version for r in history] == list(range(1, 41))
    assert sorted(r.data["n"] for r in history if r.data) == list(range(40))


async def test_changes_since_reports_every_version_in_order(storage: Storage) -> None:
    store = storage.store
    await store.save("acme", K, "a", {})
    await store.save("globex", "kpi_bindings", "t:k", {})
    await store.save("acme", K, "a", None)
    events = await store.changes_since(0)
    assert [(e.tenant, e.kind, e.resource_id, e.version) for e in events] == [
        ("acme", K, "a", 1), ("globex", "kpi_bindings", "t:k", 1), ("acme", K, "a", 2)]
    ids = [e.change_id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [e.kind for e in await store.changes_since(0, ["kpi_bindings"])] == ["kpi_bindings"]
    assert await store.changes_since(ids[-1]) == []
    assert [e.change_id for e in await store.changes_since(ids[0], limit=1)] == [ids[1]]
    assert await store.changes_since(0, []) == []


async def test_readers_never_see_half_a_write(storage: Storage) -> None:
    store = storage.store
    await store.save("acme", K, "r", {"n": 1})
    done = trio.Event()

    async def writer() -> None:
        for n in range(2, 61):
            await store.save("acme", K, "r", {"n": n})
        done.set()

    async def reader() -> None:
        last = 0
        while not done.is_set():
            rec = await store.get("acme", K, "r")
            listed = await store.list("acme", K)
            assert rec is not None and rec.data == {"n": rec.version} and rec.version >= last
            assert len(listed) == 1 and listed[0].data == {"n": listed[0].version}
            last = rec.version

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            for _ in range(3):
                nursery.start_soon(reader)


async def test_cancelled_write_is_whole_and_the_store_stays_usable(storage: Storage) -> None:
    """D5: a caller cancelled while its save runs: the save is committed whole, observably."""
    outcome = []
    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def saver() -> None:
                    outcome.append(await storage.store.save("acme", K, "c", {"n": 1}))

                nursery.start_soon(saver)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        latest = await storage.store.get("acme", K, "c")
        assert latest is not None and latest.version == 1 and latest.data == {"n": 1}
        assert outcome in ([], [latest])
        assert (await storage.store.save("acme", K, "c", {"n": 2}, expected_version=1)).version == 2


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("", K, "x", {}), {}),
        (("acme", "Bad Kind", "x", {}), {}),
        (("acme", K, "", {}), {}),
        (("acme", K, "x\x00y", {}), {}),
        (("acme", K, "x", ["not", "an", "object"]), {}),
        (("acme", K, "x", {"nan": float("nan")}), {}),
        (("acme", K, "x", {"set": {1, 2}}), {}),
        (("acme", K, "x", {}), {"expected_version": -1}),
        (("acme", K, "x", {}), {"expected_version": True}),
    ],
)
async def test_invalid_arguments_are_validation_errors(storage: Storage, args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValidationFailed):
        await storage.store.save(*args, **kwargs)
    with pytest.raises(ValidationFailed):
        await storage.store.list("acme", K, limit=0)
    assert await storage.store.history("acme", K, "x") == []


async def test_data_round_trips_unicode_and_nesting(storage: Storage) -> None:
    data = {"name": "naïve ☃ \u200b", "nested": {"list": [1, 2.5, None, True], "empty": {}}, "z": "\x00"}
    rec = await storage.store.save("acme", K, "u", data)
    assert rec.data == data
    assert (await storage.store.get("acme", K, "u")) == rec


async def test_check_passes_on_an_open_store(storage: Storage) -> None:
    from northstar.storage import AuditLog, VersionedStore

    assert isinstance(storage.store, VersionedStore) and isinstance(storage.audit, AuditLog)
    assert storage.backend in ("sqlite", "postgresql")
    await storage.store.check()


async def test_replicas_share_versions_and_see_changes_in_commit_order(storage: Storage, store_url: str) -> None:
    from northstar.storage import open_store

    async with open_store(store_url) as other:

        async def save(n: int) -> None:
            await (storage if n % 2 else other).store.save("acme", K, "shared", {"n": n})

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(30):
                    nursery.start_soon(save, n)
        history = await other.store.history("acme", K, "shared")
        assert [r.version for r in history] == list(range(1, 31))
        events = await storage.store.changes_since(0)
        assert [e.version for e in events] == list(range(1, 31))  # change_id order == commit order
        assert [e.change_id for e in events] == sorted({e.change_id for e in events})
