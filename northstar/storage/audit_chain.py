"""The audit hash chain: pure functions to build entries and to verify a stored chain.

Each entry's ``hash`` is ``sha256_hex(prev_hash + canonical_json({"seq", "ts", "record"}))``;
the first entry links to :data:`GENESIS_HASH`. Any edit of a record, timestamp or seq changes
its hash; a deletion leaves a gap in ``seq``; a reorder breaks the ``prev_hash`` links; a
truncation of the tail disagrees with the chain head the backends keep beside the log.
The verifier names the *first* sequence number where the stored chain stops being provable.

Whoever can write the database could still re-hash the chain after an edit, or cut the tail and
move the head back: the keyed seal (:mod:`.audit_seal`) catches those. With a key, the verifier
also checks the head's MAC and every anchor (an anchored seq must still hash to the anchored
value, and must still exist).

Besides its global ``seq``, an entry with a tenant carries ``tenant_seq``: its place among that
tenant's entries (1, 2, 3 ...), assigned in the same transaction. It is the number a non-admin
sees and pages by, so it reveals nothing of other tenants' traffic; the verifier recomputes it.

Sync, no I/O: the backends feed rows in ``seq`` order to a :class:`ChainVerifier`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from northstar.common.errors import ValidationFailed

from .audit_seal import Anchor, head_mac, valid_anchors
from .core import canonical_json
from .records import AuditEntry, VerifyReport

GENESIS_HASH = "0" * 64

#: Indexed copies of record fields, kept as columns so queries need not parse JSON.
COLUMN_NAMES = ("tenant", "user_id", "tool", "operation", "decision", "request_id", "sandbox")


def entry_hash(prev_hash: str, seq: int, ts: str, record: Mapping[str, Any]) -> str:
    body = canonical_json({"seq": seq, "ts": ts, "record": record})
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def entry_hash_of_text(prev_hash: str, seq: int, ts: str, text: str, *, ts_json: str | None = None) -> str:
    """:func:`entry_hash` from the record's canonical text, without encoding the record again.

    Canonical JSON sorts keys, so ``{"record", "seq", "ts"}`` is laid out as below; ``seq``
    is an int and ``ts`` a fixed-width UTC stamp (no character JSON escapes). Equality with
    :func:`entry_hash` is tested. ``ts_json`` is ``canonical_json(ts)`` when the caller has it.
    """
    body = f'{{"record":{text},"seq":{int(seq)},"ts":{ts_json or canonical_json(ts)}}}'
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
    """A record checked and encoded in the appender's task, before it is queued (its indexed
    columns too: the flusher's single task does as little per record as it can)."""

    record: dict[str, Any]
    text: str
    columns: tuple[Any, ...] = ()


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
    return PreparedRecord(record=record, text=text, columns=record_columns(record))


def tenant_of(columns: tuple[Any, ...]) -> str | None:
    """The tenant of an entry's columns; None when it has none (then it gets no tenant_seq)."""
    tenant: str | None = columns[0]
    return tenant


def tenants_of(batch: Iterable[PreparedRecord]) -> set[str]:
    """The tenants whose current ``tenant_seq`` a backend must read before chaining a batch."""
    found = (tenant_of(item.columns or record_columns(item.record)) for item in batch)
    return {t for t in found if t is not None}


class TenantHeads:
    """The last ``tenant_seq`` of recently seen tenants, as of the head this writer left.

    Reading a tenant's last ``tenant_seq`` is an index probe per tenant per batch. The writer
    that made the current head knows them already: while the head it reads under the write lock
    is the one it committed last (no other process appended since), the cached values are exact
    and no probe is needed. Any other head, or a failed write (its outcome is unknown), empties
    the cache. Bounded: emptied when it holds ``max_tenants``.
    """

    def __init__(self, max_tenants: int = 10_000) -> None:
        self._seqs: dict[str, int] = {}
        self._as_of: int | None = None
        self._max = max_tenants

    def known(self, head_seq: int, tenants: Iterable[str]) -> tuple[dict[str, int], list[str]]:
        """``(cached values, tenants to probe)`` for a batch chained onto ``head_seq``."""
        if self._as_of != head_seq:
            self._seqs.clear()
        cached = {t: self._seqs[t] for t in tenants if t in self._seqs}
        missing = [t for t in tenants if t not in cached]
        return cached, missing

    def committed(self, head_seq: int, heads: dict[str, int]) -> None:
        if len(self._seqs) + len(heads) > self._max:
            self._seqs.clear()
        self._seqs.update(heads)
        self._as_of = head_seq

    def forget(self) -> None:
        self._seqs.clear()
        self._as_of = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    """An entry as stored: the record as canonical JSON text plus its indexed columns."""

    seq: int
    ts: str
    text: str
    prev_hash: str
    hash: str
    record: dict[str, Any]
    tenant_seq: int | None = None
    known_columns: tuple[Any, ...] = ()

    @property
    def columns(self) -> tuple[Any, ...]:
        return self.known_columns or record_columns(self.record)

    def to_entry(self) -> AuditEntry:
        return AuditEntry(self.seq, self.ts, self.record, self.prev_hash, self.hash, self.tenant_seq)


def build_rows(batch: Iterable[PreparedRecord], head_seq: int, head_hash: str, ts: str,
               tenant_heads: dict[str, int] | None = None) -> list[AuditRow]:
    """Chain a batch onto the head ``(head_seq, head_hash)``; every entry of a batch shares ``ts``.

    ``tenant_heads`` maps each tenant of the batch to its last ``tenant_seq`` (0: none
    yet) and is advanced in place; without it, entries get no ``tenant_seq``.
    """
    rows: list[AuditRow] = []
    seq, prev = head_seq, head_hash
    ts_json = canonical_json(ts)
    for item in batch:
        seq += 1
        digest = entry_hash_of_text(prev, seq, ts, item.text, ts_json=ts_json)
        columns = item.columns or record_columns(item.record)
        own: int | None = None
        if tenant_heads is not None and (tenant := tenant_of(columns)) is not None:
            own = tenant_heads[tenant] = tenant_heads.get(tenant, 0) + 1
        rows.append(AuditRow(seq, ts, item.text, prev, digest, item.record, own, columns))
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
    tenant_seq: int | None = None


class ChainVerifier:
    """Feed stored rows in ascending ``seq``; stops at the first bad one.

    The chain is global (one per store, all tenants): a tenant's entries can only be proven
    intact through their neighbours, so a tenant-scoped check walks the whole chain too and
    only ``count`` is restricted to that tenant.

    With ``key`` (the audit seal's), anchors given to :meth:`add_anchors` are checked against
    the rows and the head's MAC against the head in :meth:`finish`. ``tenant_seqs`` makes it
    recompute every entry's ``tenant_seq`` too (memory: one counter per tenant).
    """

    def __init__(self, tenant: str | None = None, *, key: bytes | None = None,
                 tenant_seqs: bool = False) -> None:
        self._tenant = tenant
        self._key = key
        self._tenants: dict[str, int] | None = {} if tenant_seqs else None
        self._expected_seq = 1
        self._prev = GENESIS_HASH
        self._anchors: dict[int, Anchor] = {}
        self._anchor_problem: tuple[int, str] | None = None
        self._last_anchor = 0  # the highest anchored seq the walk has matched so far
        self.anchors_checked = 0
        self.count = 0
        self.first_bad_seq: int | None = None
        self.reason: str | None = None

    def add_anchors(self, anchors: Iterable[Anchor]) -> None:
        """Anchors to hold the chain to (from the database and the anchor file); needs the key."""
        if self._key is None:
            return
        good, bad = valid_anchors(self._key, [*self._anchors.values(), *anchors])
        self._anchors = good
        if bad and self._anchor_problem is None:
            self._anchor_problem = min(bad)

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
        problem = self._problem(row) or self._tenant_seq_problem(row)
        if problem is not None:
            return self._fail(row.seq, problem)
        anchor = self._anchors.get(row.seq)
        if anchor is not None:
            if anchor.hash != row.hash:
                return self._fail(self._last_anchor + 1, f"the chain at seq {row.seq} differs from its anchor: "
                                  f"an entry from seq {self._last_anchor + 1} to {row.seq} was altered and re-hashed")
            self._last_anchor = row.seq
            self.anchors_checked += 1
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

    def _tenant_seq_problem(self, row: StoredRow) -> str | None:
        if self._tenants is None:
            return None
        tenant = tenant_of(tuple(row.columns))
        expected = None if tenant is None else self._tenants.get(tenant, 0) + 1
        if row.tenant_seq != expected:
            return f"tenant_seq is {row.tenant_seq}, expected {expected}"
        if tenant is not None and expected is not None:
            self._tenants[tenant] = expected
        return None

    def finish(self, head_seq: int | None, head_hash: str | None, head_mac: str | None = None) -> VerifyReport:
        """Compare the walked chain with the head the backend recorded at its last commit.

        With a key: every anchor must have been matched (one beyond the last entry means the
        tail was cut) and ``head_mac`` must seal the recorded head.
        """
        if not self.broken and self._anchor_problem is not None:
            self._fail(*self._anchor_problem)
        if not self.broken and head_seq is not None:
            self._check_head(head_seq, head_hash)
        if not self.broken and self._key is not None:
            self._check_seal(head_seq, head_hash, head_mac)
        return VerifyReport(
            ok=not self.broken, count=self.count, first_bad_seq=self.first_bad_seq, reason=self.reason,
            sealed=self._key is not None and not self.broken, anchors=self.anchors_checked,
            anchored_seq=self._last_anchor or None,
        )

    def _check_seal(self, head_seq: int | None, head_hash: str | None, mac: str | None) -> None:
        assert self._key is not None
        last = self._expected_seq - 1
        beyond = [seq for seq in self._anchors if seq > last]
        if beyond:
            self._fail(last + 1, f"chain truncated: an anchor records seq {max(beyond)}, the last entry is {last}")
        elif head_seq is None or head_hash is None or mac is None:
            self._fail(self._last_anchor + 1, "the recorded head carries no seal")
        elif not hmac.compare_digest(mac, head_mac(self._key, head_seq, head_hash)):
            self._fail(self._last_anchor + 1, "the recorded head is not sealed by the audit key: the log was "
                       f"changed outside northstar after seq {self._last_anchor} (truncated, or edited and re-hashed)")

    def _check_head(self, head_seq: int, head_hash: str | None) -> None:
        last = self._expected_seq - 1
        if head_seq > last:
            self._fail(last + 1, f"chain truncated: the head records seq {head_seq}, last entry is {last}")
        elif head_seq < last:
            self._fail(head_seq + 1, f"entries beyond the recorded head (seq {head_seq})")
        elif head_hash != self._prev:
            self._fail(max(last, 1), "the last entry does not match the recorded head")


def verify_rows(rows: Iterable[StoredRow], head: tuple[int, str] | tuple[int, str, str | None] | None = None,
                tenant: str | None = None, *, key: bytes | None = None, anchors: Iterable[Anchor] = (),
                tenant_seqs: bool = False) -> VerifyReport:
    """Verify a whole chain held in memory (the backends stream pages into a verifier instead)."""
    verifier = ChainVerifier(tenant, key=key, tenant_seqs=tenant_seqs)
    verifier.add_anchors(anchors)
    for row in rows:
        if not verifier.feed(row):
            break
    seq, hash_, *mac = head or (None, None)
    return verifier.finish(seq, hash_, mac[0] if mac else None)
