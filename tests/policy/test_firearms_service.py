"""FirearmsService over a real SQLite store: bindings, grants, expiry, revocation, tenants,
replicas, and failing closed when the policy snapshot goes stale."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from northstar.common import errors as E
from northstar.common.errors import PolicyUnavailable
from northstar.common.identity import RequestContext
from northstar.policy.firearms import FirearmsService, parse_time
from northstar.storage import Storage, kinds, open_store

FA = "firearm.media.write"
T0 = 1_900_000_000.0  # a fixed "now" for grant expiry


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def who(tenant: str = "acme", user: str = "alice") -> RequestContext:
    return RequestContext(request_id="r", tenant=tenant, user=user)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_store(f"sqlite:///{tmp_path / 'policy.db'}") as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def svc(storage: Storage, clock: Clock) -> FirearmsService:
    service = FirearmsService(storage.store, clock=clock)
    await service.load()
    await service.bind("media.write", FA, actor="test")
    return service


async def replica(storage: Storage, clock: Clock | None = None) -> FirearmsService:
    other = FirearmsService(storage.store, clock=clock or Clock())
    await other.load()
    return other


# -- bindings ----------------------------------------------------------------------------------
async def test_bound_scope_needs_its_firearm_and_unbound_is_open(svc: FirearmsService) -> None:
    d = svc.check_access(who(), "media.write")
    assert (d.firearm, d.allowed, d.granted) == (FA, False, frozenset())
    d = svc.check_access(who(), "media.read")
    assert (d.firearm, d.allowed) == (None, True)
    assert svc.bindings() == {"media.write": FA}
    assert svc.list_bindings() == [{"scope": "media.write", "firearm": FA}]


async def test_unbind_opens_the_scope_and_is_kept_in_history(svc: FirearmsService, storage: Storage) -> None:
    await svc.unbind("media.write", actor="test")
    assert svc.check_access(who(), "media.write").allowed
    with pytest.raises(E.NotFound):
        await svc.unbind("media.write", actor="test")
    versions = await storage.store.history("_global", kinds.FIREARM_BINDINGS, "media.write")
    assert [v.data is None for v in versions] == [False, True]
    assert [v.actor for v in versions] == ["test", "test"]
    assert (await replica(storage)).bindings() == {}


async def test_rebinding_changes_the_firearm(svc: FirearmsService, storage: Storage) -> None:
    await svc.grant("acme", "alice", FA, granted_by="test")
    await svc.bind("media.write", "firearm.media.admin", actor="test")
    d = svc.check_access(who(), "media.write")
    assert (d.firearm, d.allowed) == ("firearm.media.admin", False)
    assert (await replica(storage)).bindings() == {"media.write": "firearm.media.admin"}


@pytest.mark.parametrize("scope", ["", "Media.write", "media write", "../x", "m" * 129, "médïa"])
async def test_invalid_scope_names_are_refused(svc: FirearmsService, scope: str) -> None:
    with pytest.raises(E.ValidationFailed):
        await svc.bind(scope, FA, actor="test")


@pytest.mark.parametrize(
    "firearm", ["media.write", "firearm.", "Firearm.media.write", "firearm.media write", "firearm.médïa", "firearm"]
)
async def test_invalid_firearm_names_are_refused(svc: FirearmsService, firearm: str) -> None:
    with pytest.raises(E.ValidationFailed):
        await svc.bind("media.write", firearm, actor="test")
    with pytest.raises(E.ValidationFailed):
        await svc.grant("acme", "alice", firearm, granted_by="test")


async def test_defaults_are_bound_once_and_an_operator_unbind_sticks(storage: Storage) -> None:
    a = await replica(storage)
    await a.ensure_default_bindings({"media.write": FA})
    assert a.bindings() == {"media.write": FA}
    await a.unbind("media.write", actor="operator")
    b = await replica(storage)
    await b.ensure_default_bindings({"media.write": FA})  # a restart does not undo the operator
    assert b.bindings() == {}


# -- grants -------------------------------------------------------------------------------------
async def test_grant_allows_and_is_recorded(svc: FirearmsService, storage: Storage) -> None:
    g = await svc.grant("acme", "alice", FA, granted_by="admin", reason="ticket-1")
    assert (g.tenant, g.user, g.firearm, g.granted_by, g.reason) == ("acme", "alice", FA, "admin", "ticket-1")
    d = svc.check_access(who(), "media.write")
    assert d.allowed and d.granted == frozenset({FA})
    assert (await replica(storage)).check_access(who(), "media.write").allowed
    [listed] = svc.list_grants("acme")
    assert listed["active"] is True and listed["reason"] == "ticket-1"


async def test_expired_grant_is_denied(svc: FirearmsService, clock: Clock, storage: Storage) -> None:
    await svc.grant("acme", "alice", FA, granted_by="admin", expires_at=iso(T0 + 60))
    assert svc.check_access(who(), "media.write").allowed
    clock.now = T0 + 59.999
    assert svc.check_access(who(), "media.write").allowed
    clock.now = T0 + 60  # expiry is exclusive
    d = svc.check_access(who(), "media.write")
    assert not d.allowed and d.granted == frozenset()
    assert svc.list_grants("acme")[0]["active"] is False
    late = await replica(storage, Clock(T0 + 3600))  # another replica, loading it from the store
    assert not late.check_access(who(), "media.write").allowed


async def test_a_grant_already_expired_is_refused(svc: FirearmsService) -> None:
    with pytest.raises(E.ValidationFailed):
        await svc.grant("acme", "alice", FA, granted_by="admin", expires_at=iso(T0 - 1))
    with pytest.raises(E.ValidationFailed):
        await svc.grant("acme", "alice", FA, granted_by="admin", expires_at="next tuesday")


async def test_expiry_without_a_zone_is_utc() -> None:
    assert parse_time("2030-01-01T00:00:00") == parse_time("2030-01-01T00:00:00Z") == parse_time(
        "2030-01-01T01:00:00+01:00"
    )


async def test_revoke_takes_effect_on_the_next_check(svc: FirearmsService, storage: Storage) -> None:
    await svc.grant("acme", "alice", FA, granted_by="admin")
    assert svc.check_access(who(), "media.write").allowed
    await svc.revoke("acme", "alice", FA, actor="admin")
    assert not svc.check_access(who(), "media.write").allowed
    assert not (await replica(storage)).check_access(who(), "media.write").allowed
    with pytest.raises(E.NotFound):
        await svc.revoke("acme", "alice", FA, actor="admin")
    history = await storage.store.history("acme", kinds.FIREARM_GRANTS, f"alice:{FA}")
    assert [h.data is None for h in history] == [False, True]


async def test_a_replica_sees_a_revoke_on_its_next_refresh(svc: FirearmsService, storage: Storage) -> None:
    await svc.grant("acme", "alice", FA, granted_by="admin")
    other = await replica(storage)
    assert other.check_access(who(), "media.write").allowed
    await svc.revoke("acme", "alice", FA, actor="admin")
    await other.refresh_once()
    assert not other.check_access(who(), "media.write").allowed


@pytest.mark.parametrize(
    "near_miss", ["firearm.media.writ", "firearm.media.write.all", "firearm.media", "firearm.media.write.",
                  "firearm.media.write-", "firearm.media.read", "firearm.media_write"],
)
async def test_near_miss_grants_are_denied(svc: FirearmsService, near_miss: str) -> None:
    await svc.grant("acme", "alice", near_miss, granted_by="admin")
    d = svc.check_access(who(), "media.write")
    assert not d.allowed and d.granted == frozenset({near_miss})


async def test_another_tenants_or_users_grant_does_not_count(svc: FirearmsService) -> None:
    await svc.grant("other", "alice", FA, granted_by="admin")
    await svc.grant("acme", "bob", FA, granted_by="admin")
    await svc.grant("acme.x", "alice", FA, granted_by="admin")
    assert not svc.check_access(who("acme", "alice"), "media.write").allowed
    assert svc.check_access(who("other", "alice"), "media.write").allowed
    assert svc.check_access(who("acme", "bob"), "media.write").allowed
    assert [g["tenant"] for g in svc.list_grants("acme")] == ["acme"]


@pytest.mark.parametrize(("tenant", "user"), [("acme", "a/b"), ("ac me", "alice"), ("", "alice"), ("acme", "x" * 200)])
async def test_grants_to_malformed_identities_are_refused(svc: FirearmsService, tenant: str, user: str) -> None:
    with pytest.raises(E.BadRequest):
        await svc.grant(tenant, user, FA, granted_by="admin")


async def test_listeners_hear_every_change(svc: FirearmsService) -> None:
    heard: list[int] = []
    svc.listeners.append(lambda: heard.append(1))
    await svc.grant("acme", "alice", FA, granted_by="admin")
    await svc.revoke("acme", "alice", FA, actor="admin")
    await svc.bind("media.read", "firearm.media.read", actor="admin")
    await svc.unbind("media.read", actor="admin")
    assert len(heard) == 4


# -- a snapshot load racing a revoke --------------------------------------------------------------
class PausingStore:
    """Delegates to the real store; ``get`` of grants waits for ``release`` once ``armed``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = False
        self.paused = trio.Event()
        self.release = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, tenant: str, kind: str, resource_id: str, version: int | None = None) -> Any:
        rec = await self.inner.get(tenant, kind, resource_id, version)
        if self.armed and kind == kinds.FIREARM_GRANTS:
            self.armed = False
            self.paused.set()
            await self.release.wait()
        return rec


async def test_a_snapshot_read_before_a_revoke_does_not_resurrect_the_grant(storage: Storage) -> None:
    store = PausingStore(storage.store)
    svc = FirearmsService(store)
    await svc.load()
    await svc.bind("media.write", FA, actor="t")
    await svc.grant("acme", "alice", FA, granted_by="t")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            store.armed = True
            nursery.start_soon(svc.load)  # reads the grant, then pauses before installing it
            await store.paused.wait()
            revoked = trio.Event()

            async def revoke() -> None:
                await svc.revoke("acme", "alice", FA, actor="t")
                revoked.set()

            nursery.start_soon(revoke)
            # Let the revoke finish, or queue behind the load if the load holds the lock.
            while not (revoked.is_set() or svc._lock.statistics().tasks_waiting):
                await trio.sleep(0.005)
            store.release.set()
    assert not svc.check_access(who(), "media.write").allowed


# -- staleness: fail closed -----------------------------------------------------------------------
class BreakableStore:
    """The real store, until ``broken``: then change polling fails like an unreachable database."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def changes_since(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            raise E.StoreUnavailable("database is down", retry_after=1)
        return await self.inner.changes_since(*args, **kwargs)


async def test_a_stale_snapshot_fails_closed_then_recovers(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    store = BreakableStore(storage.store)
    svc = FirearmsService(store, refresh_interval_s=1.0, max_staleness_s=5.0)
    await svc.bind("media.write", FA, actor="t")
    await svc.grant("acme", "alice", FA, granted_by="t")
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        assert svc.check_access(who(), "media.write").allowed
        store.broken = True
        broke_at = trio.current_time()
        await trio.sleep(4.5)  # refreshes fail, but the snapshot is younger than max_staleness_s
        assert svc.check_access(who(), "media.write").allowed
        await trio.sleep(2.0)
        for ctx in (who(), who("other", "bob")):  # every decision, allowed or not, is refused
            with pytest.raises(PolicyUnavailable) as info:
                svc.check_access(ctx, "media.read")
        assert info.value.http_status == 503 and info.value.retry_after == 1
        assert info.value.code == "policy_unavailable"
        assert trio.current_time() - broke_at > 5.0
        store.broken = False
        # One successful refresh makes the snapshot fresh again. (Called directly: with a
        # virtual clock, time races ahead while a real SQLite read runs in its thread.)
        await svc.refresh_once()
        assert svc.check_access(who(), "media.write").allowed
        nursery.cancel_scope.cancel()


async def test_never_loaded_is_unavailable(storage: Storage) -> None:
    svc = FirearmsService(storage.store)
    with pytest.raises(PolicyUnavailable):
        svc.check_access(who(), "media.read")
