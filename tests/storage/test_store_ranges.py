"""Every number the store and the audit log take has a declared range, checked before any I/O.

The repro: ``GET /v1/drafts/x/versions/99999999999999999999999`` handed an integer >= 2**63 to
the store actor, SQLite raised ``OverflowError`` inside it, the actor crashed, and six such
requests exhausted the root's restart intensity. Here the same values are refused as
``ValidationFailed`` in the caller's task: by the store's messages (the actor never sees
them), by both backends directly, and by the audit query. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from northstar.common.errors import ValidationFailed
from northstar.common.limits import INT64_MAX, MAX_VERSION
from northstar.storage import Storage
from northstar.storage.actor import ChangesSince, Get, History, List, Save, StoreClient
from tests.storage.test_store_actor import supervised

K = "kpi_bindings"
REPRO = 99999999999999999999999
HUGE = [REPRO, 2**63, 2**64, -(2**63) - 1]
VERSIONS_OUT = [*HUGE, MAX_VERSION + 1, INT64_MAX]  # a version is an INT on PostgreSQL
NOT_INTS = [True, 1.0, "1", None]


@pytest.fixture
async def client(storage: Storage) -> AsyncIterator[StoreClient]:
    async with supervised(storage.store) as (store_client, _):
        yield store_client


def bad_calls(store: Any) -> list[tuple[str, Callable[[], Any]]]:
    """(label, call) pairs that must each raise ValidationFailed, through any VersionedStore."""
    calls: list[tuple[str, Callable[[], Any]]] = []
    for n in [*VERSIONS_OUT, 0, -1, True, 1.5]:
        calls.append((f"get version={n!r}", lambda n=n: store.get("acme", K, "r", n)))
    for n in [*VERSIONS_OUT, -1, True, 2.0]:
        calls.append((f"save expected_version={n!r}", lambda n=n: store.save("acme", K, "r", {}, expected_version=n)))
    for n in [*HUGE, 0, -5, True]:
        calls.append((f"list limit={n!r}", lambda n=n: store.list("acme", K, limit=n)))
        calls.append((f"changes limit={n!r}", lambda n=n: store.changes_since(0, None, n)))
    for n in [*HUGE, -1, *NOT_INTS]:
        calls.append((f"changes change_id={n!r}", lambda n=n: store.changes_since(n)))
    long = "x" * 10_000
    calls += [
        ("list after=long", lambda: store.list("acme", K, after=long)),
        ("list prefix=long", lambda: store.list("acme", K, prefix=long)),
        ("list after=int", lambda: store.list("acme", K, after=7)),
        ("save actor=long", lambda: store.save("acme", K, "r", {}, actor=long)),
        ("history id=long", lambda: store.history("acme", K, long)),
        ("changes kinds=bad", lambda: store.changes_since(0, ["Not A Kind"])),
    ]
    return calls


async def test_out_of_range_values_never_reach_the_store_actor(client: StoreClient) -> None:
    before = client.ref.stats()
    for label, call in bad_calls(client):
        with pytest.raises(ValidationFailed):
            await call()
            pytest.fail(label)
    after = client.ref.stats()
    assert after.crashes == 0 and after.processed == before.processed  # refused before it was sent
    assert await client.get("acme", K, "r", MAX_VERSION) is None  # the edge of the range is fine
    assert await client.changes_since(INT64_MAX) == []


async def test_the_messages_check_their_fields_in_the_callers_task() -> None:
    for make in (lambda: Get("acme", K, "r", REPRO), lambda: Save("acme", K, "r", {}, REPRO),
                 lambda: List("acme", K, limit=REPRO), lambda: ChangesSince(REPRO),
                 lambda: History("acme", K, "x" * 1000), lambda: Get("acme", K, "r", 0)):
        with pytest.raises(ValidationFailed):
            make()


async def test_each_backend_refuses_them_too(storage: Storage) -> None:
    """Defence in depth: the store core's checks run in both backends, whoever calls them."""
    for label, call in bad_calls(storage.store):
        with pytest.raises(ValidationFailed):
            await call()
            pytest.fail(label)
    await storage.store.save("acme", K, "r", {"x": 1}, expected_version=0)
    assert (await storage.store.get("acme", K, "r", MAX_VERSION)) is None
    assert (await storage.store.get("acme", K, "r", 1)) is not None


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "x" * 100, "²"])
async def test_audit_timestamps_out_of_range_are_refused(storage: Storage, since: str) -> None:
    with pytest.raises(ValidationFailed):
        await storage.audit.query(tenant=None, since=since)
    with pytest.raises(ValidationFailed):
        await storage.audit.query(tenant=None, until=since)


async def test_audit_query_numbers_and_filters_have_declared_ranges(storage: Storage) -> None:
    await storage.audit.append({"tenant": "acme", "tool": "t", "decision": "allow"})
    for kwargs in [{"after_seq": n} for n in [*HUGE, -1, True, 1.5, "2"]] + [
        {"limit": n} for n in [*HUGE, 0, True]
    ] + [{"tool": "x" * 1000}, {"user": "u" * 1000}, {"decision": 7}]:
        with pytest.raises(ValidationFailed):
            await storage.audit.query(tenant=None, **kwargs)
    for seq in [*HUGE, -1]:
        with pytest.raises(ValidationFailed):
            await storage.audit.get(seq)
    assert await storage.audit.query(tenant=None, after_seq=INT64_MAX) == []
    assert len(await storage.audit.query(tenant="acme", after_seq=0)) == 1
    assert await storage.audit.get(INT64_MAX) is None
