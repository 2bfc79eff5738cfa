"""The audit hash chain: pure functions to build entries and to verify a stored chain.

Each entry's ``hash`` is ``sha256_hex(prev_hash + canonical_json({"seq", "ts", "record"}))``;
the first entry links to :data:`GENESIS_HASH`. Any edit of a record, timestamp or seq changes
its hash; a deletion leaves a gap in ``seq``; a reorder breaks the ``prev_hash`` links; a
truncation of the tail disagrees with the chain head the backends keep beside the log.
The verifier names the *first* sequence number where the stored chain stops being provable.

Sync, no I/O: the backends feed rows in ``seq`` order to a :class:`ChainVerifier`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from northstar.common.errors import ValidationFailed

from .core import canonical_json
from .records import AuditEntry, VerifyReport

GENESIS_HASH = "0" * 64

#: Indexed copies of record fields, kept as columns so queries need not parse JSON.
COLUMN_NAMES = ("tenant", "user_id", "tool", "operation", "decision", "request_id", "sandbox")


def entry_hash(prev_hash: str, seq: int, ts: str, record: Mapping[str, Any]) -> str:
    body = canonical_json({"seq": seq, "ts": ts, "record": record})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def entry_hash_of_text(prev_hash: str, seq: int, ts: str, text: str) -> str:
    """:func:`entry_hash` from the record's canonical text, without encoding the record again.

    Canonical JSON sorts keys, so ``{"record", "seq", "ts"}`` is laid out as below; ``seq``
    is an int and ``ts`` a fixed-width UTC stamp (no character JSON escapes). Equality with
    :func:`entry_hash` is tested.
    """
    body = f'{{"record":{text},"seq":{int(seq)},"ts":{canonical_json(ts)}}}'
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def record_columns(record: Mapping[str, Any]) -> tuple[str | None, str | None, str | None, str | None,
                                                       str | None, str | None, bool]:
    """The indexed columns of a record, in :data:`COLUMN_NAMES` order (``user`` or ``user_id``)."""
    user = record.get("user_id", record.get("user"))
    return (
        _text_or_none(record.get("tenant")),
        _text_or_none(user),
        _text_or_none(record.get("tool")),
        _text_or_none(record.get("operation")),
        _text_or_none(record.get("decision")),
        _text_or_none(record.get("request_id")),
        bool(record.get("sandbox", False)),
    )


#: Values a record may hold as they are: the entry returned equals the stored text's record.
_PLAIN = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """A record checked and encoded in the appender's task, before it is queued."""

    record: dict[str, Any]
    text: str


def prepare_record(record: Any) -> PreparedRecord:
    if not isinstance(record, dict):
        raise ValidationFailed("an audit record must be a JSON object", errors=[{"loc": ["record"]}])
    try:
        text = canonical_json(record)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(
            "audit record is not JSON-serialisable", errors=[{"loc": ["record"], "msg": str(exc)}]
        ) from None
    if not all(type(value) in _PLAIN for value in record.values()):
        record = json.loads(text)  # tuples, subclasses, ...: keep what the text says, not the objects
    return PreparedRecord(record=record, text=text)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """An entry as stored: the record as canonical JSON text plus its indexed columns."""

    seq: int
    ts: str
    text: str
    prev_hash: str
    hash: str
    record: dict[str, Any]

    @property
    def columns(self) -> tuple[Any, ...]:
        return record_columns(self.record)

    def to_entry(self) -> AuditEntry:
        return AuditEntry(self.seq, self.ts, self.record, self.prev_hash, self.hash)


def build_rows(batch: Iterable[PreparedRecord], head_seq: int, head_hash: str, ts: str) -> list[AuditRow]:
    """Chain a batch onto the head ``(head_seq, head_hash)``; every entry of a batch shares ``ts``."""
    rows: list[AuditRow] = []
    seq, prev = head_seq, head_hash
    for item in batch:
        seq += 1
        digest = entry_hash_of_text(prev, seq, ts, item.text)
        rows.append(AuditRow(seq, ts, item.text, prev, digest, item.record))
        prev = digest
    return rows


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row read back for verification, columns included, nothing trusted."""

    seq: int
    ts: str
    text: str
    prev_hash: str
    hash: str
    columns: tuple[Any, ...]


class ChainVerifier:
    """Feed stored rows in ascending ``seq``; stops at the first bad one.

    The chain is global (one per store, all tenants): a tenant's entries can only be proven
    intact through their neighbours, so a tenant-scoped check walks the whole chain too and
    only ``count`` is restricted to that tenant.
    """

    def __init__(self, tenant: str | None = None) -> None:
        self._tenant = tenant
        self._expected_seq = 1
        self._prev = GENESIS_HASH
        self.count = 0
        self.first_bad_seq: int | None = None
        self.reason: str | None = None

    @property
    def broken(self) -> bool:
        return self.first_bad_seq is not None

    def _fail(self, seq: int, reason: str) -> bool:
        self.first_bad_seq, self.reason = seq, reason
        return False

    def feed(self, row: StoredRow) -> bool:
        """Check one row; returns False once the chain is broken (further rows are pointless)."""
        if self.broken:
            return False
        if row.seq != self._expected_seq:
            return self._fail(min(row.seq, self._expected_seq), "entry missing: sequence has a gap")
        problem = self._problem(row)
        if problem is not None:
            return self._fail(row.seq, problem)
        self._prev = row.hash
        self._expected_seq += 1
        if self._tenant is None or row.columns[0] == self._tenant:
            self.count += 1
        return True

    def _problem(self, row: StoredRow) -> str | None:
        try:
            record = json.loads(row.text)
        except ValueError:
            return "record is not valid JSON"
        if not isinstance(record, dict):
            return "record is not a JSON object"
        if row.prev_hash != self._prev:
            return "prev_hash does not link to the previous entry (reordered or replaced)"
        if entry_hash(row.prev_hash, row.seq, row.ts, record) != row.hash:
            return "hash mismatch: the entry was edited"
        if tuple(row.columns) != record_columns(record):
            return "indexed columns disagree with the record"
        return None

    def finish(self, head_seq: int | None, head_hash: str | None) -> VerifyReport:
        """Compare the walked chain with the head the backend recorded at its last commit."""
        if not self.broken and head_seq is not None:
            self._check_head(head_seq, head_hash)
        return VerifyReport(
            ok=not self.broken, count=self.count, first_bad_seq=self.first_bad_seq, reason=self.reason
        )

    def _check_head(self, head_seq: int, head_hash: str | None) -> None:
        last = self._expected_seq - 1
        if head_seq > last:
            self._fail(last + 1, f"chain truncated: the head records seq {head_seq}, last entry is {last}")
        elif head_seq < last:
            self._fail(head_seq + 1, f"entries beyond the recorded head (seq {head_seq})")
        elif head_hash != self._prev:
            self._fail(max(last, 1), "the last entry does not match the recorded head")


def verify_rows(rows: Iterable[StoredRow], head: tuple[int, str] | None = None,
                tenant: str | None = None) -> VerifyReport:
    """Verify a whole chain held in memory (the backends stream pages into a verifier instead)."""
    verifier = ChainVerifier(tenant)
    for row in rows:
        if not verifier.feed(row):
            break
    return verifier.finish(*(head or (None, None)))
