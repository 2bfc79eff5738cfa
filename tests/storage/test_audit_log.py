"""The audit log on both backends: ordering, group commit, queries, tamper detection, failure."""

from __future__ import annotations

import sqlite3

import pytest
import trio

from northstar.common.errors import AuditUnavailable, ValidationFailed
from northstar.storage import Storage, open_store
from tests.storage.conftest import RawDB


def rec(i: int, **extra: object) -> dict[str, object]:
    return {"tenant": "acme" if i % 2 else "globex", "user": f"u{i % 3}", "tool": "echo",
            "operation": "call", "decision": "deny" if i % 5 == 0 else "allow", "request_id": f"r{i}",
            "sandbox": i % 7 == 0, "i": i, **extra}


async def append_n(storage: Storage, n: int) -> None:
    for i in range(1, n + 1):
        await storage.audit.append(rec(i))


async def test_append_returns_the_committed_chained_entry(storage: Storage) -> None:
    first = await storage.audit.append(rec(1))
    second = await storage.audit.append(rec(2, nested={"b": [1, 2]}))
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == "0" * 64 and second.prev_hash == first.hash
    assert second.record == rec(2, nested={"b": [1, 2]})
    assert await storage.audit.get(2) == second
    assert await storage.audit.get(3) is None
    assert storage.audit.healthy


async def test_200_concurrent_appends_are_gap_free_ordered_and_batched(storage: Storage) -> None:
    entries = []

    async def append(i: int) -> None:
        entries.append(await storage.audit.append(rec(i)))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(append, i)
    assert sorted(e.seq for e in entries) == list(range(1, 201))
    stats = storage.audit.stats
    assert stats.appended == 200 and stats.flushes < 200 and stats.largest_batch > 1
    stored = await storage.audit.query(tenant=None, limit=1000)
    assert [e.seq for e in stored] == list(range(1, 201))
    assert [e.ts for e in stored] == sorted(e.ts for e in stored)
    assert {e.record["i"] for e in stored} == set(range(200))
    assert {e.seq: e for e in entries} == {e.seq: e for e in stored}
    report = await storage.audit.verify()
    assert report.ok and report.count == 200


async def test_query_filters_and_pages(storage: Storage) -> None:
    await append_n(storage, 20)
    audit = storage.audit
    acme = await audit.query(tenant="acme")
    assert [e.record["i"] for e in acme] == list(range(1, 21, 2))
    assert {e.record["tenant"] for e in await audit.query(tenant="globex")} == {"globex"}
    denies = await audit.query(tenant=None, decision="deny")
    assert [e.record["i"] for e in denies] == [5, 10, 15, 20]
    assert [e.record["i"] for e in await audit.query(tenant="acme", user="u0", tool="echo")] == [3, 9, 15]
    page1 = await audit.query(tenant=None, limit=8)
    page2 = await audit.query(tenant=None, after_seq=page1[-1].seq, limit=8)
    assert [e.seq for e in page1 + page2] == list(range(1, 17))
    assert await audit.query(tenant="nobody") == []
    ts = page1[0].ts
    assert len(await audit.query(tenant=None, since=ts)) == 20
    assert await audit.query(tenant=None, until=ts) == []
    assert len(await audit.query(tenant=None, since="2000-01-01T00:00:00Z", until="2999-01-01")) == 20
    with pytest.raises(ValidationFailed):
        await audit.query(tenant=None, since="yesterday")


async def test_verify_counts_a_tenants_entries(storage: Storage) -> None:
    await append_n(storage, 9)
    assert (await storage.audit.verify("acme")).count == 5
    assert (await storage.audit.verify()).count == 9


async def test_the_log_is_append_only(storage: Storage, raw: RawDB) -> None:
    await append_n(storage, 3)
    for statement in ("UPDATE audit_log SET decision = 'allow' WHERE seq = 1", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            await raw.execute(statement)
    assert (await storage.audit.verify()).ok


def _sql_text(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def swap_rows(raw: RawDB, a: int, b: int) -> None:
    cols = ["ts", "tenant", "user_id", "tool", "operation", "decision", "request_id", "sandbox", "record",
            "prev_hash", "hash", "tenant_seq"]
    rows = {row[0]: row[1:] for row in await raw.fetch(
        f"SELECT seq, {', '.join(cols)} FROM audit_log WHERE seq IN ({a}, {b})")}
    # tenant_seq is unique per tenant: clear both before the exchange, as an attacker would
    statements = [f"UPDATE audit_log SET tenant_seq = NULL WHERE seq IN ({a}, {b})"]
    for target, source in ((a, b), (b, a)):
        sets = ", ".join(f"{c} = {_sql_text(v)}" for c, v in zip(cols, rows[source], strict=True))
        statements.append(f"UPDATE audit_log SET {sets} WHERE seq = {target}")
    await raw.execute(*statements)


TAMPERS = {
    "edit": (["UPDATE audit_log SET record = '{\"i\":4,\"decision\":\"allow\"}' WHERE seq = 4"], 4),
    "edit-column": (["UPDATE audit_log SET decision = 'allow' WHERE seq = 5"], 5),
    "delete": (["DELETE FROM audit_log WHERE seq = 6"], 6),
    "truncate-tail": (["DELETE FROM audit_log WHERE seq = 10"], 10),
    "swap": ([], 3),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
async def test_tampering_is_reported_at_the_exact_seq(store_url: str, raw: RawDB, tamper: str) -> None:
    async with open_store(store_url) as storage:
        await append_n(storage, 10)
        assert (await storage.audit.verify()).ok
        await raw.drop_audit_triggers()  # what an attacker with write access would do first
        statements, bad_seq = TAMPERS[tamper]
        if tamper == "swap":
            await swap_rows(raw, 3, 7)
        else:
            await raw.execute(*statements)
        report = await storage.audit.verify()
    assert not report.ok
    assert report.first_bad_seq == bad_seq, report
    assert report.reason


async def test_a_failed_flush_fails_closed_then_recovers(store_url: str, raw: RawDB, backend: str) -> None:
    async with open_store(store_url, busy_timeout_ms=50) if backend == "sqlite" else open_store(store_url) as s:
        await s.audit.append(rec(1))
        with trio.fail_after(20):
            if backend == "sqlite":
                assert raw.path is not None
                blocker = sqlite3.connect(str(raw.path), isolation_level=None)
                blocker.execute("BEGIN EXCLUSIVE")
            else:
                await raw.execute("ALTER TABLE audit_log RENAME TO audit_log_hidden")
            with pytest.raises(AuditUnavailable):
                await s.audit.append(rec(2))
            assert not s.audit.healthy
            with pytest.raises(AuditUnavailable):
                await s.audit.append(rec(3))
            if backend == "sqlite":
                blocker.execute("COMMIT")
                blocker.close()
            else:
                await raw.execute("ALTER TABLE audit_log_hidden RENAME TO audit_log")
            entry = await s.audit.append(rec(4))
        assert s.audit.healthy
        assert entry.seq == 2  # failed batches consumed no sequence numbers
        assert s.audit.stats.failed_flushes == 2
        assert (await s.audit.verify()).ok


async def test_closing_the_store_flushes_queued_appends(store_url: str) -> None:
    seqs: list[int] = []
    async with open_store(store_url) as storage:

        async def append(i: int) -> None:
            seqs.append((await storage.audit.append(rec(i))).seq)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(append, i)
    assert sorted(seqs) == list(range(1, 21))
    async with open_store(store_url) as storage:
        assert (await storage.audit.verify()).count == 20
        with pytest.raises(ValidationFailed):
            await storage.audit.append({"bad": float("nan")})


async def test_two_replicas_append_to_one_linear_chain(store_url: str) -> None:
    seqs: list[int] = []
    async with open_store(store_url) as one, open_store(store_url) as two:

        async def append(storage: Storage, i: int) -> None:
            seqs.append((await storage.audit.append(rec(i))).seq)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(60):
                    nursery.start_soon(append, one if i % 2 else two, i)
        assert sorted(seqs) == list(range(1, 61))
        report = await one.audit.verify()
        assert report.ok and report.count == 60
