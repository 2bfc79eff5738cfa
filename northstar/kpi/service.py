"""KPI bindings on the versioned store (kind ``kpi_bindings``, resource ``"<tool_name>:<kpi_id>"``)."""

from __future__ import annotations

import re

from pydantic import ValidationError

from northstar.common.errors import NotFound, ValidationFailed
from northstar.storage.base import VersionedStore
from northstar.storage.kinds import KPI_BINDINGS
from northstar.storage.records import Record

from .models import KPI_ID_PATTERN, TOOL_NAME_PATTERN, KpiBinding

_PAGE = 500


def _check(field: str, value: object, pattern: str) -> str:
    if not isinstance(value, str) or not re.match(pattern, value):
        raise ValidationFailed(f"{field} must match {pattern}", errors=[{"loc": [field], "msg": "invalid"}])
    return value


def _resource_id(tool_name: str, kpi_id: str) -> str:
    return f"{_check('tool_name', tool_name, TOOL_NAME_PATTERN)}:{_check('kpi_id', kpi_id, KPI_ID_PATTERN)}"


def _binding(record: Record) -> KpiBinding:
    try:
        return KpiBinding.model_validate(record.data)
    except ValidationError as exc:  # stored by an older, laxer model: surface, do not hide
        raise ValidationFailed(f"stored KPI binding {record.resource_id!r} no longer validates",
                               errors=[{"loc": ["data"], "msg": str(exc)}]) from None


class KpiService:
    kind = KPI_BINDINGS

    def __init__(self, store: VersionedStore) -> None:
        self.store = store

    async def save_kpi_binding(self, tenant: str, binding: KpiBinding, *, actor: str | None = None,
                               expected_version: int | None = None) -> KpiBinding:
        """Save (create or replace) a binding as the next version of its resource."""
        if not isinstance(binding, KpiBinding):
            raise ValidationFailed("binding must be a KpiBinding", errors=[{"loc": ["binding"]}])
        data = binding.model_dump(mode="json")
        record = await self.store.save(tenant, self.kind, binding.resource_id, data,
                                       expected_version=expected_version, actor=actor)
        return _binding(record)

    async def get_kpi_binding(self, tenant: str, tool_name: str, kpi_id: str) -> KpiBinding | None:
        resource_id = _resource_id(tool_name, kpi_id)
        record = await self.store.get(tenant, self.kind, resource_id)
        return None if record is None or record.data is None else _binding(record)

    async def list_kpi_bindings(self, tenant: str, tool_name: str) -> list[KpiBinding]:
        """All live bindings of ``tool_name`` (and only that tool's), ordered by ``kpi_id``."""
        prefix = _check("tool_name", tool_name, TOOL_NAME_PATTERN) + ":"
        out: list[KpiBinding] = []
        after: str | None = None
        while True:
            page = await self.store.list(tenant, self.kind, prefix=prefix, after=after, limit=_PAGE)
            out.extend(_binding(r) for r in page)
            if len(page) < _PAGE:
                return out
            after = page[-1].resource_id

    async def delete_kpi_binding(self, tenant: str, tool_name: str, kpi_id: str, *,
                                 actor: str | None = None) -> None:
        """Tombstone the binding (its history stays); ``NotFound`` if there is no live one."""
        resource_id = _resource_id(tool_name, kpi_id)
        record = await self.store.get(tenant, self.kind, resource_id)
        if record is None or record.data is None:
            raise NotFound(f"no KPI binding {resource_id!r}", tool_name=tool_name, kpi_id=kpi_id)
        await self.store.save(tenant, self.kind, resource_id, None,
                              expected_version=record.version, actor=actor)
