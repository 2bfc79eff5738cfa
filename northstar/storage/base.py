"""The storage interfaces: a versioned document store and an append-only, hash-chained audit log.

Backends (:mod:`.sqlite`, :mod:`.postgres`) and the actor client (:mod:`.actor`) implement
them structurally; callers depend on these protocols only.

Versioned store semantics
    Every save creates the next version of a resource: 1, 2, 3 ... contiguous per
    ``(tenant, kind, resource_id)``; nothing is ever overwritten. ``data=None`` saves a
    tombstone (a deleted resource keeps its history). ``expected_version`` makes a save
    conditional: ``None`` unconditional, ``0`` "must not exist yet", ``N`` "current must be N",
    otherwise :class:`~northstar.common.errors.Conflict` with ``details["current_version"]``.
    Every saved version also gets a global, increasing ``change_id``, visible in commit order,
    so replicas can poll :meth:`VersionedStore.changes_since`.

Errors: ``ValidationFailed`` for bad arguments, ``Conflict`` as above, ``StoreUnavailable``
(``retry_after`` set) when the database cannot be reached or written in time.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import trio

from .records import AuditEntry, ChangeEvent, Record, VerifyReport


@runtime_checkable
class VersionedStore(Protocol):
    async def save(self, tenant: str, kind: str, resource_id: str, data: dict[str, Any] | None, *,
                   expected_version: int | None = None, actor: str | None = None) -> Record:
        """Create the next version (``data=None``: a tombstone) and return it once committed."""
        ...

    async def get(self, tenant: str, kind: str, resource_id: str,
                  version: int | None = None) -> Record | None:
        """That version, or the latest (a tombstone comes back with ``data=None``); None if absent."""
        ...

    async def list(self, tenant: str, kind: str, *, prefix: str | None = None, after: str | None = None,
                   limit: int = 100, include_deleted: bool = False) -> builtins.list[Record]:
        """Latest version of each resource, by ``resource_id``; page on with ``after=<last id>``.

        ``limit`` is capped at 1000: to read everything, page until a page comes back empty
        (or shorter than a ``limit`` <= 1000).
        """
        ...

    async def history(self, tenant: str, kind: str, resource_id: str) -> builtins.list[Record]:
        """Every version, ascending (empty if the resource never existed)."""
        ...

    async def changes_since(self, change_id: int, kinds: Sequence[str] | None = None,
                            limit: int = 1000) -> builtins.list[ChangeEvent]:
        """Versions saved after ``change_id``, all tenants, in ``change_id`` (= commit) order."""
        ...

    async def check(self) -> None:
        """Health probe: returns, or raises ``StoreUnavailable``."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class AuditLog(Protocol):
    @property
    def healthy(self) -> bool:
        """False after the last flush failed, until one succeeds: fail closed meanwhile."""
        ...

    async def append(self, record: dict[str, Any]) -> AuditEntry:
        """Return only once the record is durably committed; else raise ``AuditUnavailable``."""
        ...

    async def query(self, *, tenant: str | None, tool: str | None = None, user: str | None = None,
                    decision: str | None = None, since: str | None = None, until: str | None = None,
                    after_seq: int | None = None, limit: int = 100,
                    by_tenant_seq: bool = False) -> builtins.list[AuditEntry]:
        """Entries in ``seq`` order; ``tenant=None`` is every tenant; ``since <= ts < until``;
        ``by_tenant_seq``: that tenant's entries paged by ``tenant_seq``."""
        ...

    async def get(self, seq: int) -> AuditEntry | None: ...

    async def verify(self, tenant: str | None = None) -> VerifyReport:
        """Check the hash chain; names the first bad ``seq`` on any edit, deletion or reorder."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The flusher task; start it with ``nursery.start``."""
        ...
