"""Plain value types the storage layer hands out: records, audit entries, reports, change events.

They are frozen dataclasses (not pydantic): they never cross the wire as-is, and equality and
hashing by value is what the tests and the callers want.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Record:
    """One version of one resource. ``data is None`` marks a tombstone (the resource was deleted)."""

    tenant: str
    kind: str
    resource_id: str
    version: int
    data: dict[str, Any] | None
    created_at: str
    actor: str | None
    change_id: int

    @property
    def deleted(self) -> bool:
        return self.data is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One committed audit record with its place in the hash chain.

    ``seq`` is global (every tenant's entries share it); ``tenant_seq`` counts only the
    entries of the record's own tenant (None when the record names no tenant).
    """

    seq: int
    ts: str
    record: dict[str, Any]
    prev_hash: str
    hash: str
    tenant_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of an audit chain check; ``first_bad_seq`` pinpoints the first broken entry.

    ``sealed``: the recorded head's MAC was checked with the audit key and holds. ``anchors``:
    how many keyed anchors the chain was matched against; ``anchored_seq``: the newest of them
    (entries after it rest on the sealed head alone).
    """

    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str | None = None
    sealed: bool = False
    anchors: int = 0
    anchored_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A saved version, as seen by a poller of :meth:`VersionedStore.changes_since`."""

    change_id: int
    tenant: str
    kind: str
    resource_id: str
    version: int
