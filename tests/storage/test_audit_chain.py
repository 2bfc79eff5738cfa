"""The pure audit-chain core: building entries, and pinpointing the first bad one."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from northstar.common.errors import ValidationFailed
from northstar.storage.audit_chain import (
    GENESIS_HASH,
    AuditRow,
    StoredRow,
    build_rows,
    entry_hash,
    entry_hash_of_text,
    prepare_record,
    record_columns,
    verify_rows,
)
from northstar.storage.core import canonical_json

TS = "2025-01-01T00:00:00.000000Z"


def chain(n: int, start: int = 0) -> list[AuditRow]:
    records = [prepare_record({"tenant": f"t{i % 2}", "tool": "echo", "i": i}) for i in range(n)]
    return build_rows(records, start, GENESIS_HASH, TS)


def stored(rows: list[AuditRow]) -> list[StoredRow]:
    return [StoredRow(r.seq, r.ts, r.text, r.prev_hash, r.hash, r.columns) for r in rows]


def head(rows: list[AuditRow]) -> tuple[int, str]:
    return (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS_HASH)


def test_hash_is_sha256_over_prev_hash_and_canonical_entry() -> None:
    record = {"b": 1, "a": "ü"}
    body = json.dumps({"seq": 1, "ts": TS, "record": record}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    expected = hashlib.sha256((GENESIS_HASH + body).encode()).hexdigest()
    assert entry_hash(GENESIS_HASH, 1, TS, record) == expected
    assert entry_hash(GENESIS_HASH, 1, TS, {"a": "ü", "b": 1}) == expected  # key order is irrelevant
    assert entry_hash(GENESIS_HASH, 2, TS, record) != expected


def test_rows_link_from_genesis_with_contiguous_seq() -> None:
    rows = chain(5)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == GENESIS_HASH == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert rows[2].text == canonical_json(rows[2].record)
    assert verify_rows(stored(rows), head(rows)) == verify_rows(stored(rows))
    report = verify_rows(stored(rows), head(rows))
    assert report.ok and report.count == 5 and report.first_bad_seq is None


def test_tenant_scoped_count() -> None:
    rows = chain(5)
    assert verify_rows(stored(rows), head(rows), tenant="t0").count == 3


def test_a_batch_continues_an_existing_chain() -> None:
    first = chain(3)
    more = build_rows([prepare_record({"x": 1})], first[-1].seq, first[-1].hash, TS)
    assert more[0].seq == 4 and more[0].prev_hash == first[-1].hash
    assert verify_rows(stored([*first, *more]), head(more)).ok


def test_edited_record_is_reported_at_its_seq() -> None:
    rows = stored(chain(8))
    rows[3] = dataclasses.replace(rows[3], text=canonical_json({"tenant": "t1", "tool": "echo", "i": 99}))
    report = verify_rows(rows)
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "edited" in (report.reason or "")


def test_deleted_entry_is_reported_at_the_gap() -> None:
    rows = stored(chain(8))
    del rows[5]
    report = verify_rows(rows)
    assert report.first_bad_seq == 6 and "missing" in (report.reason or "")


def test_swapped_entries_are_reported_at_the_first() -> None:
    rows = stored(chain(8))
    a, b = rows[2], rows[6]
    rows[2] = dataclasses.replace(b, seq=3)
    rows[6] = dataclasses.replace(a, seq=7)
    assert verify_rows(rows).first_bad_seq == 3


def test_truncated_tail_disagrees_with_the_head() -> None:
    full = chain(8)
    report = verify_rows(stored(full[:-2]), head(full))
    assert report.first_bad_seq == 7 and "truncated" in (report.reason or "")


def test_column_disagreeing_with_record_is_reported() -> None:
    rows = stored(chain(4))
    rows[1] = dataclasses.replace(rows[1], columns=("t1", None, "echo", None, "allow", None, False))
    assert verify_rows(rows).first_bad_seq == 2


def test_record_columns_accept_user_or_user_id() -> None:
    assert record_columns({"user": "u"})[1] == "u"
    assert record_columns({"user_id": "v", "user": "u"})[1] == "v"
    assert record_columns({"sandbox": 1, "tenant": 7})[0::6] == ("7", True)


@pytest.mark.parametrize("bad", [[1], "text", {"x": float("inf")}, {"x": object()}])
def test_prepare_rejects_what_is_not_a_json_object(bad: object) -> None:
    with pytest.raises(ValidationFailed):
        prepare_record(bad)


TAMPERS = st.sampled_from(["edit", "delete", "swap", "relink"])


@settings(deadline=None)
@given(n=st.integers(min_value=2, max_value=30), data=st.data(), tamper=TAMPERS)
def test_any_single_tamper_is_pinpointed(n: int, data: st.DataObject, tamper: str) -> None:
    rows = stored(chain(n))
    k = data.draw(st.integers(min_value=0, max_value=n - 2))
    if tamper == "edit":
        rows[k] = dataclasses.replace(rows[k], text=canonical_json({"tenant": "x", "tool": "echo", "i": -1}),
                                      columns=("x", None, "echo", None, None, None, False))
    elif tamper == "delete":
        del rows[k]
    elif tamper == "swap":
        rows[k], rows[k + 1] = (dataclasses.replace(rows[k + 1], seq=k + 1),
                                dataclasses.replace(rows[k], seq=k + 2))
    else:  # recompute this entry's hash after editing: the next link breaks instead
        record = {"forged": True}
        forged = entry_hash(rows[k].prev_hash, k + 1, TS, record)
        rows[k] = dataclasses.replace(rows[k], text=canonical_json(record), hash=forged,
                                      columns=record_columns(record))
        report = verify_rows(rows)
        assert report.first_bad_seq == k + 2
        return
    assert verify_rows(rows).first_bad_seq == k + 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=8), seq=st.integers(1, 2**62))
def test_hash_from_text_equals_the_canonical_hash(record: dict, seq: int) -> None:
    """The writer hashes the prepared text; the verifier re-encodes the parsed record: they agree."""
    prepared = prepare_record(record)
    assert entry_hash_of_text("ab" * 32, seq, TS, prepared.text) == entry_hash("ab" * 32, seq, TS, record)
    assert json.loads(prepared.text) == prepared.record


def test_prepared_record_keeps_what_the_text_says() -> None:
    prepared = prepare_record({"a": (1, 2), "b": "x"})  # a tuple is stored as a list
    assert prepared.record == {"a": [1, 2], "b": "x"}
    plain = {"a": 1, "b": "x", "c": None, "d": 1.5, "e": True}
    assert prepare_record(plain).record == plain
