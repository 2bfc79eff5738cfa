"""The keyed seal of the audit log: key files, anchors, the sealed head, and the two attacks it
exists for (a truncated tail with its head moved back, an edit with everything after it
re-hashed), on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from northstar.common.errors import AuditUnavailable
from northstar.storage import AuditSealError, Storage, open_store, options_for
from northstar.storage.audit import GroupCommitAuditLog
from northstar.storage.audit_chain import (
    GENESIS_HASH,
    AuditRow,
    StoredRow,
    build_rows,
    entry_hash,
    prepare_record,
    verify_rows,
)
from northstar.storage.audit_seal import (
    Anchor,
    AuditSeal,
    append_anchor,
    head_mac,
    load_or_create_key,
    make_anchor,
    open_seal,
    read_anchors,
)
from northstar.storage.core import canonical_json
from tests.storage.conftest import RawDB
from tests.storage.test_audit_group_commit import FakeIO

KEY = bytes(range(32))
TS = "2025-01-01T00:00:00.000000Z"


# -- the key file -------------------------------------------------------------------------------------
def test_a_new_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key  # read back, not replaced
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temporary left behind


def test_processes_creating_the_key_together_agree(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        keys.append(load_or_create_key(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(keys) == 8 and len(set(keys)) == 1


def test_a_bad_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    path.write_text("not hex\n")
    with pytest.raises(AuditSealError):
        load_or_create_key(path)
    path.write_text("ab" * 8)
    with pytest.raises(AuditSealError, match="32-byte"):
        load_or_create_key(path)


def test_the_seal_never_shows_its_key() -> None:
    seal = AuditSeal(KEY)
    assert KEY.hex() not in repr(seal) and seal.key_id in repr(seal)


# -- anchors -------------------------------------------------------------------------------------------
def test_anchor_file_round_trip_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.anchors"
    first, second = make_anchor(KEY, 5, "a" * 64, TS), make_anchor(KEY, 9, "b" * 64, TS)
    append_anchor(path, first)
    append_anchor(path, second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with open(path, "a") as out:
        out.write('{"seq": 12, "ha')  # a crash in the middle of an append
    assert read_anchors(path) == ([first, second], [])
    with open(path, "a") as out:
        out.write("\nnot an anchor\n")
    anchors, problems = read_anchors(path)  # the cut line is no longer the last: it is reported too
    assert anchors == [first, second]
    assert problems == ["audit.anchors line 3 is not an anchor", "audit.anchors line 4 is not an anchor"]
    assert read_anchors(tmp_path / "absent") == ([], [])


def chain(n: int) -> list[AuditRow]:
    records = [prepare_record({"tenant": "t", "user": f"u{i % 3}", "i": i}) for i in range(n)]
    return build_rows(records, 0, GENESIS_HASH, TS, {})


def stored(rows: list[AuditRow]) -> list[StoredRow]:
    return [StoredRow(r.seq, r.ts, r.text, r.prev_hash, r.hash, r.columns, r.tenant_seq) for r in rows]


def sealed_head(rows: list[AuditRow], key: bytes = KEY) -> tuple[int, str, str]:
    return rows[-1].seq, rows[-1].hash, head_mac(key, rows[-1].seq, rows[-1].hash)


def rehash(rows: list[StoredRow], start: int) -> list[StoredRow]:
    """Recompute every hash from index ``start`` on, as someone without the key can."""
    out = list(rows[:start])
    prev = out[-1].hash if out else GENESIS_HASH
    for row in rows[start:]:
        digest = entry_hash(prev, row.seq, row.ts, json.loads(row.text))
        out.append(dataclasses.replace(row, prev_hash=prev, hash=digest))
        prev = digest
    return out


def test_an_honest_sealed_chain_verifies_with_its_anchors() -> None:
    rows = chain(10)
    anchors = [make_anchor(KEY, r.seq, r.hash, TS) for r in (rows[3], rows[7])]
    report = verify_rows(stored(rows), sealed_head(rows), key=KEY, anchors=anchors, tenant_seqs=True)
    assert (report.ok, report.sealed, report.anchors, report.anchored_seq, report.count) == (True, True, 2, 8, 10)


def test_tenant_seqs_are_contiguous_per_tenant_and_checked() -> None:
    records = [prepare_record({"tenant": f"t{i % 2}", "user": "u", "i": i}) for i in range(9)]
    records.insert(4, prepare_record({"event": "no tenant"}))
    rows = build_rows(records, 0, GENESIS_HASH, TS, {})
    assert [r.tenant_seq for r in rows[:6]] == [1, 1, 2, 2, None, 3]
    assert verify_rows(stored(rows), tenant_seqs=True).ok
    tampered = stored(rows)
    tampered[4] = dataclasses.replace(tampered[4], tenant_seq=7)
    report = verify_rows(tampered, tenant_seqs=True)
    assert (report.ok, report.first_bad_seq) == (False, 5) and "tenant_seq" in (report.reason or "")


def test_truncation_with_the_head_moved_back_is_caught_by_the_head_mac() -> None:
    rows = chain(10)
    kept = rows[:6]
    forged_head = (kept[-1].seq, kept[-1].hash, "0" * 64)  # the attacker cannot compute the MAC
    report = verify_rows(stored(kept), forged_head, key=KEY)
    assert not report.ok and report.first_bad_seq == 1 and "not sealed" in (report.reason or "")


def test_truncation_back_to_a_replayed_old_head_is_caught_by_a_later_anchor() -> None:
    rows = chain(10)
    anchors = [make_anchor(KEY, rows[3].seq, rows[3].hash, TS), make_anchor(KEY, rows[8].seq, rows[8].hash, TS)]
    kept = rows[:6]
    report = verify_rows(stored(kept), sealed_head(kept), key=KEY, anchors=anchors)  # a genuine old MAC
    assert not report.ok and report.first_bad_seq == 7 and "truncated" in (report.reason or "")


def test_an_edit_rehashed_to_the_end_is_caught_by_head_mac_and_anchors() -> None:
    rows = chain(10)
    anchors = [make_anchor(KEY, rows[2].seq, rows[2].hash, TS), make_anchor(KEY, rows[7].seq, rows[7].hash, TS)]
    edited = stored(rows)
    edited[4] = dataclasses.replace(edited[4], text=canonical_json({**rows[4].record, "i": 99}))
    forged = rehash(edited, 4)
    assert verify_rows(forged).ok  # the plain chain cannot tell
    unkeyed_head = (forged[-1].seq, forged[-1].hash, "f" * 64)
    report = verify_rows(forged, unkeyed_head, key=KEY)
    assert not report.ok and report.first_bad_seq == 1 and "not sealed" in (report.reason or "")
    report = verify_rows(forged, unkeyed_head, key=KEY, anchors=anchors)
    # entries up to the anchor at seq 3 still match; the edit is somewhere in 4..8
    assert not report.ok and report.first_bad_seq == 4 and "4 to 8" in (report.reason or "")


def test_forged_or_foreign_anchors_fail_the_check() -> None:
    rows = chain(6)
    good = make_anchor(KEY, rows[2].seq, rows[2].hash, TS)
    forged = dataclasses.replace(good, hash="0" * 64)
    report = verify_rows(stored(rows), sealed_head(rows), key=KEY, anchors=[good, forged])
    assert not report.ok and "MAC" in (report.reason or "")
    foreign = make_anchor(bytes(32), rows[2].seq, rows[2].hash, TS)
    report = verify_rows(stored(rows), sealed_head(rows), key=KEY, anchors=[foreign])
    assert not report.ok and "another audit key" in (report.reason or "")


# -- anchoring off the commit path (fake backend, virtual clock) -------------------------------------
async def test_anchors_every_n_records_every_t_seconds_and_at_stop(autojump_clock: trio.testing.MockClock) -> None:
    io = FakeIO()
    seal = AuditSeal(KEY, anchor_every=10, anchor_interval_s=5.0)
    log = GroupCommitAuditLog(io, seal=seal)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            await nursery.start(log.run_anchors)
            for i in range(25):
                await log.append({"i": i})
                await trio.testing.wait_all_tasks_blocked()  # a due anchor is made before the next call
            assert [a.seq for a in io.anchors] == [10, 20]  # by count, without waiting for the timer
            await trio.sleep(5.5)
            assert [a.seq for a in io.anchors] == [10, 20, 25]  # by time, for the rest
            await trio.sleep(20)
            assert len(io.anchors) == 3  # nothing new: no anchor
            await log.append({"i": 25})
            log.shutdown()
    assert [a.seq for a in io.anchors] == [10, 20, 25, 26]  # the last one when the flusher stopped
    assert all(a.key_id == seal.key_id and a.hash == io.rows[a.seq - 1].hash for a in io.anchors)


async def test_a_failed_anchor_is_logged_and_retried_and_never_fails_a_call(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class FlakyIO(FakeIO):
        fail_anchor = True

        async def write_anchor(self, anchor: Anchor) -> None:
            if self.fail_anchor:
                raise AuditUnavailable("store down")
            await super().write_anchor(anchor)

    io = FlakyIO()
    log = GroupCommitAuditLog(io, seal=AuditSeal(KEY, anchor_every=3, anchor_interval_s=1.0))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            await nursery.start(log.run_anchors)
            for i in range(4):
                await log.append({"i": i})  # every call is acknowledged whatever the anchors do
            await trio.sleep(1.5)
            assert io.anchors == [] and log.stats.failed_anchors >= 1
            io.fail_anchor = False
            await trio.sleep(1.5)
            assert [a.seq for a in io.anchors] == [4]
            log.shutdown()
    assert "audit anchor at seq" in caplog.text


# -- on the real backends ----------------------------------------------------------------------------
def rec(i: int) -> dict[str, object]:
    return {"tenant": "acme" if i % 2 else "globex", "user": f"u{i % 3}", "tool": "echo", "decision": "allow",
            "i": i}


def seal_in(tmp_path: Path, **policy: object) -> AuditSeal:
    return open_seal(tmp_path / "audit.key", tmp_path / "audit.anchors", **policy)  # type: ignore[arg-type]


async def fill(storage: Storage, n: int) -> None:
    """Append ``n`` records; with a seal, wait after each for any anchor it made due (so anchors
    land exactly every ``anchor_every`` records)."""
    for _ in range(n):
        await storage.audit.append(rec(storage.audit.stats.appended + 1))
        seal = storage.audit.seal
        if seal is not None and storage.audit.stats.appended % seal.anchor_every == 0:
            with trio.fail_after(10):
                while storage.audit.stats.anchors < storage.audit.stats.appended // seal.anchor_every:
                    await trio.sleep(0.005)


async def drop_anchor_triggers(raw: RawDB) -> None:
    if raw.backend == "sqlite":
        await raw.execute("DROP TRIGGER audit_anchors_no_delete")
    else:
        await raw.execute("DROP TRIGGER audit_anchors_append_only ON audit_anchors")


async def test_a_sealed_store_refuses_another_key_or_none(store_url: str, tmp_path: Path) -> None:
    seal = seal_in(tmp_path)
    async with open_store(store_url, audit_seal=seal) as storage:
        await fill(storage, 3)
        report = await storage.audit.verify()
        assert report.ok and report.sealed
    other = open_seal(tmp_path / "other.key", None)
    with pytest.raises(AuditSealError, match=f"sealed with audit key {seal.key_id}, not {other.key_id}"):
        async with open_store(store_url, audit_seal=other):
            pass
    with pytest.raises(AuditSealError, match=seal.key_id):
        async with open_store(store_url):
            pass


async def head_row(raw: RawDB) -> tuple[int, str, str]:
    [(seq, hash_, mac)] = await raw.fetch("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
    return int(seq), str(hash_), str(mac)


async def truncate_to(raw: RawDB, keep: int, head: tuple[int, str, str] | None = None) -> None:
    """Delete the tail after ``keep`` and move the head back: to ``keep``'s own hash with a made-up
    MAC, or to ``head`` (a head and MAC copied earlier: a replay)."""
    [(last_hash,)] = await raw.fetch(f"SELECT hash FROM audit_log WHERE seq = {keep}")
    seq, hash_, mac = head or (keep, last_hash, "0" * 64)
    await raw.drop_audit_triggers()
    await raw.execute(f"DELETE FROM audit_log WHERE seq > {keep}",
                      f"UPDATE audit_head SET seq = {seq}, hash = '{hash_}', mac = '{mac}' WHERE id = 1")


async def edit_and_rehash(raw: RawDB, seq: int) -> None:
    """Edit one record and recompute every hash after it, the head included (no key needed)."""
    rows = await raw.fetch("SELECT seq, ts, record, prev_hash, hash FROM audit_log ORDER BY seq")
    statements, prev = [], None
    import json

    for row_seq, ts, text, prev_hash, hash_ in rows:
        if row_seq < seq:
            prev = hash_
            continue
        record = json.loads(text)
        if row_seq == seq:
            record["decision"] = "deny"
        digest = entry_hash(prev if prev is not None else prev_hash, row_seq, ts, record)
        body = canonical_json(record).replace("'", "''")
        statements.append(f"UPDATE audit_log SET record = '{body}', decision = '{record['decision']}', "
                          f"prev_hash = '{prev or prev_hash}', hash = '{digest}' WHERE seq = {row_seq}")
        prev = digest
    statements.append(f"UPDATE audit_head SET hash = '{prev}' WHERE id = 1")
    await raw.drop_audit_triggers()
    await raw.execute(*statements)


async def test_attack_truncate_and_fix_the_head_is_detected(store_url: str, raw: RawDB, tmp_path: Path) -> None:
    seal = seal_in(tmp_path, anchor_interval_s=3600)
    async with open_store(store_url, audit_seal=seal) as storage:
        await fill(storage, 12)
        assert (await storage.audit.verify()).ok
        await truncate_to(raw, 8)
        report = await storage.audit.verify()
        assert not report.ok and "not sealed" in (report.reason or ""), report
        # ...and the writer refuses to seal the altered head with a fresh MAC: it fails closed
        with pytest.raises(AuditUnavailable):
            await storage.audit.append(rec(99))
        assert not storage.audit.healthy
        assert not (await storage.audit.verify()).ok


async def test_attack_truncate_to_a_replayed_old_head_is_detected_by_anchors(
    store_url: str, raw: RawDB, tmp_path: Path
) -> None:
    seal = seal_in(tmp_path, anchor_every=4, anchor_interval_s=3600)
    async with open_store(store_url, audit_seal=seal) as storage:
        await fill(storage, 5)
        old_head = await head_row(raw)  # the attacker copies a genuine head and its MAC
        await fill(storage, 7)  # anchored at 4, 8 and 12, off the commit path
        await truncate_to(raw, 5, old_head)
        await drop_anchor_triggers(raw)
        await raw.execute("DELETE FROM audit_anchors")  # the table's anchors go too; the file's remain
        report = await storage.audit.verify()
    assert not report.ok and report.first_bad_seq == 6 and "truncated" in (report.reason or ""), report
    assert [a.seq for a in read_anchors(seal.anchor_file)[0]] == [4, 8, 12]


async def test_attack_edit_and_rehash_is_detected(store_url: str, raw: RawDB, tmp_path: Path) -> None:
    seal = seal_in(tmp_path, anchor_every=4, anchor_interval_s=3600)
    async with open_store(store_url, audit_seal=seal) as storage:
        await fill(storage, 10)  # anchored at 4 and 8
        await edit_and_rehash(raw, 6)
        report = await storage.audit.verify()
        assert not report.ok and report.first_bad_seq == 5 and "5 to 8" in (report.reason or ""), report
        with pytest.raises(AuditUnavailable):  # the re-hashed head carries no valid MAC
            await storage.audit.append(rec(99))


async def test_an_unsealed_log_is_sealed_as_it_stands_and_keeps_verifying(
    store_url: str, tmp_path: Path
) -> None:
    async with open_store(store_url) as storage:  # an older gateway: no key
        await fill(storage, 4)
    seal = seal_in(tmp_path, anchor_every=2)
    async with open_store(store_url, audit_seal=seal) as storage:
        report = await storage.audit.verify()
        assert report.ok and report.sealed and report.count == 4
        await fill(storage, 3)
    async with open_store(store_url, audit_seal=seal) as storage:
        report = await storage.audit.verify()
        assert report.ok and report.sealed and report.count == 7 and report.anchored_seq == 7


# -- tenant_seq on the real backends ------------------------------------------------------------
async def test_tenant_seq_numbers_each_tenants_records(storage: Storage) -> None:
    entries = [await storage.audit.append(rec(i)) for i in range(1, 13)]
    await storage.audit.append({"event": "health_probe"})  # no tenant: no tenant_seq
    by_tenant: dict[str, list[int]] = {}
    for e in entries:
        by_tenant.setdefault(str(e.record["tenant"]), []).append(e.tenant_seq or 0)
    assert by_tenant == {"acme": [1, 2, 3, 4, 5, 6], "globex": [1, 2, 3, 4, 5, 6]}
    own = await storage.audit.query(tenant="acme", user="u1", by_tenant_seq=True, limit=1)
    more = await storage.audit.query(tenant="acme", user="u1", by_tenant_seq=True, after_seq=own[-1].tenant_seq)
    assert [e.tenant_seq for e in own + more] == [1, 4]  # acme/u1: i = 1 and 7 (acme's 1st and 4th)
    assert [e.record["i"] for e in own + more] == [1, 7]
    assert (await storage.audit.get(13)).tenant_seq is None  # type: ignore[union-attr]
    assert (await storage.audit.verify()).ok


async def test_tenant_seq_stays_exact_with_two_writers(store_url: str, tmp_path: Path) -> None:
    """Two processes' flushers on one store: each reads the other's numbering, never its own stale one."""
    seal = seal_in(tmp_path)
    async with open_store(store_url, audit_seal=seal) as one, open_store(store_url, audit_seal=seal) as two:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon((one if i % 2 else two).audit.append,
                                       {"tenant": "acme", "user": "alice", "i": i})
        own = await one.audit.query(tenant="acme", user="alice", by_tenant_seq=True, limit=100)
        assert [e.tenant_seq for e in own] == list(range(1, 41))
        report = await two.audit.verify()
        assert report.ok and report.sealed


def test_key_file_env_path_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from northstar.common.config import Settings

    monkeypatch.setenv("NORTHSTAR_AUDIT_KEY_FILE", str(tmp_path / "elsewhere" / "k"))
    settings = Settings(data_dir=tmp_path / "data")
    seal = options_for(settings)["audit_seal"]
    assert (tmp_path / "elsewhere" / "k").exists() and not (tmp_path / "data" / "audit.key").exists()
    assert seal.anchor_file == tmp_path / "data" / "audit.anchors" and seal.key == load_or_create_key(
        tmp_path / "elsewhere" / "k")
    assert os.stat(tmp_path / "elsewhere" / "k").st_mode & 0o077 == 0


# -- the migration of an existing log -------------------------------------------------------------
def old_rows(n: int) -> list[AuditRow]:
    """Entries as the previous schema stored them (no tenant_seq), two tenants interleaved."""
    records = [prepare_record({"tenant": "acme" if i % 2 else "globex", "user": f"u{i % 3}", "i": i})
               for i in range(1, n + 1)]
    records.append(prepare_record({"event": "policy", "principal": "cli/root"}))  # no principal
    return build_rows(records, 0, GENESIS_HASH, TS)


def old_schema_statements(backend: str, rows: list[AuditRow]) -> list[str]:
    from northstar.storage import pg_schema, sqlite_schema

    migrations = (sqlite_schema if backend == "sqlite" else pg_schema).MIGRATIONS[:2]
    statements = ["CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                  " applied_at TEXT NOT NULL)"]
    for m in migrations:
        statements += [*m.statements,
                       f"INSERT INTO schema_migrations VALUES ({m.version}, '{m.name}', '{TS}')"]
    for r in rows:
        tenant, user = (f"'{v}'" if v is not None else "NULL" for v in r.columns[:2])
        text = r.text.replace("'", "''")
        statements.append(f"INSERT INTO audit_log (seq, ts, tenant, user_id, sandbox, record, prev_hash, hash)"
                          f" VALUES ({r.seq}, '{r.ts}', {tenant}, {user}, FALSE, '{text}', '{r.prev_hash}',"
                          f" '{r.hash}')")
    statements.append(f"UPDATE audit_head SET seq = {rows[-1].seq}, hash = '{rows[-1].hash}' WHERE id = 1")
    return statements


async def test_an_existing_log_is_numbered_per_tenant_and_sealed_on_upgrade(
    raw: RawDB, store_url: str, tmp_path: Path
) -> None:
    rows = old_rows(9)
    statements = old_schema_statements(raw.backend, rows)
    if raw.backend == "postgres":
        statements.insert(0, f'CREATE SCHEMA "{raw.schema}"')
    await raw.execute(*statements)
    seal = seal_in(tmp_path)
    async with open_store(store_url, audit_seal=seal) as storage:
        report = await storage.audit.verify()
        assert report.ok and report.sealed and report.count == 10, report
        numbered = {(e.record.get("tenant"), e.record.get("user"), e.record.get("i")): e.tenant_seq
                    for e in await storage.audit.query(tenant=None, limit=100)}
        # acme held i = 1, 3, 5, 7, 9 and globex 2, 4, 6, 8: each numbered in seq order
        assert [numbered[("acme", f"u{i % 3}", i)] for i in (1, 3, 5, 7, 9)] == [1, 2, 3, 4, 5]
        assert [numbered[("globex", f"u{i % 3}", i)] for i in (2, 4, 6, 8)] == [1, 2, 3, 4]
        assert numbered[(None, None, None)] is None
        entry = await storage.audit.append({"tenant": "acme", "user": "u1", "i": 13})
        assert (entry.seq, entry.tenant_seq) == (11, 6)  # new entries continue each numbering
        assert (await storage.audit.verify()).ok
    [(sealed_seq,)] = await raw.fetch("SELECT sealed_seq FROM audit_seal")
    assert sealed_seq == 10  # the log was sealed as it stood when this version first opened it
    with pytest.raises(Exception, match="append-only"):  # the guard is back after the backfill
        await raw.execute("UPDATE audit_log SET decision = 'x' WHERE seq = 1")
