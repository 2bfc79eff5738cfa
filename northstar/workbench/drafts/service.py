"""Drafts of tool definitions: every save is a new version of ``(tenant, draft_id)``.

Stored under the resource kind ``workbench_drafts`` as ``{"schema_version": 1, "spec": {...}}``.
A spec is a JSON object of at most 256 KiB of canonical JSON; the optional ``validate`` hook
(the workbench plugs its tool-definition validator in here) may transform the spec or raise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from northstar.common.errors import NorthstarError, NotFound, ValidationFailed
from northstar.storage.base import VersionedStore
from northstar.storage.core import canonical_json
from northstar.storage.kinds import WORKBENCH_DRAFTS
from northstar.storage.records import Record

DRAFT_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
MAX_SPEC_BYTES = 256 * 1024
SCHEMA_VERSION = 1

_DRAFT_ID_RE = re.compile(DRAFT_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class DraftRecord:
    draft_id: str
    version: int
    spec: dict[str, Any]
    schema_version: int
    created_at: str
    actor: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Record) -> DraftRecord:
        data = record.data or {}
        return cls(record.resource_id, record.version, data.get("spec", {}),
                   int(data.get("schema_version", SCHEMA_VERSION)), record.created_at, record.actor)


def _invalid(loc: str, msg: str, **extra: Any) -> ValidationFailed:
    return ValidationFailed(msg, errors=[{"loc": [loc], "msg": msg, **extra}])


def check_draft_id(draft_id: Any) -> str:
    if not isinstance(draft_id, str) or not _DRAFT_ID_RE.match(draft_id):
        raise _invalid("draft_id", f"draft_id must match {DRAFT_ID_PATTERN}")
    return draft_id


def check_spec(spec: Any) -> dict[str, Any]:
    """A JSON object of at most :data:`MAX_SPEC_BYTES` bytes of canonical JSON."""
    if not isinstance(spec, dict):
        raise _invalid("spec", "spec must be a JSON object")
    try:
        size = len(canonical_json(spec).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise _invalid("spec", f"spec is not valid JSON: {exc}") from None
    if size > MAX_SPEC_BYTES:
        raise _invalid("spec", f"spec is {size} bytes of JSON, over the {MAX_SPEC_BYTES} limit",
                       limit=MAX_SPEC_BYTES)
    return spec


class DraftService:
    kind = WORKBENCH_DRAFTS

    def __init__(self, store: VersionedStore, *,
                 validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.store = store
        self.validate = validate

    def _prepare(self, raw: Any) -> dict[str, Any]:
        spec = check_spec(raw)
        if self.validate is None:
            return spec
        try:
            transformed: Any = self.validate(spec)
        except NorthstarError:
            raise
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise _invalid("spec", str(exc)) from None
        return check_spec(transformed)

    async def save_draft(self, ctx_tenant: str, draft_id: str, spec: dict[str, Any], *,
                         expected_version: int | None = None, actor: str | None = None) -> DraftRecord:
        """Save ``spec`` as the next version; ``Conflict`` if ``expected_version`` is stale."""
        check_draft_id(draft_id)
        value = {"schema_version": SCHEMA_VERSION, "spec": self._prepare(spec)}
        record = await self.store.save(ctx_tenant, self.kind, draft_id, value,
                                       expected_version=expected_version, actor=actor)
        return DraftRecord.from_record(record)

    async def get_draft(self, tenant: str, draft_id: str, version: int | None = None) -> DraftRecord:
        """The latest (or a given) version; ``NotFound`` when absent or deleted."""
        check_draft_id(draft_id)
        record = await self.store.get(tenant, self.kind, draft_id, version)
        if record is None or record.data is None:
            raise NotFound(f"no draft {draft_id!r}" + (f" version {version}" if version else ""),
                           draft_id=draft_id, version=version)
        return DraftRecord.from_record(record)

    async def list_drafts(self, tenant: str, *, after: str | None = None,
                          limit: int = 100) -> list[DraftRecord]:
        """Latest version of each live draft, by ``draft_id``; page on with ``after``."""
        records = await self.store.list(tenant, self.kind, after=after, limit=limit)
        return [DraftRecord.from_record(r) for r in records]

    async def draft_history(self, tenant: str, draft_id: str) -> list[DraftRecord]:
        """Every saved version, ascending (deletions left out); empty if it never existed."""
        check_draft_id(draft_id)
        records = await self.store.history(tenant, self.kind, draft_id)
        return [DraftRecord.from_record(r) for r in records if r.data is not None]

    async def delete_draft(self, tenant: str, draft_id: str, *, expected_version: int | None = None,
                           actor: str | None = None) -> None:
        """Write a tombstone (history is kept); ``NotFound`` if there is no live draft."""
        current = await self.get_draft(tenant, draft_id)
        expected = current.version if expected_version is None else expected_version
        await self.store.save(tenant, self.kind, draft_id, None, expected_version=expected, actor=actor)


# Aliases so ``from northstar.workbench.drafts.service import save_draft`` works: unbound
# methods, called with the service first (``save_draft(service, tenant, draft_id, spec)``).
save_draft = DraftService.save_draft
get_draft = DraftService.get_draft
list_drafts = DraftService.list_drafts
draft_history = DraftService.draft_history
