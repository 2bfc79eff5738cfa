"""Shared helpers for the workbench tests: specs, contexts, a catalogue and a real runtime."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from northstar.common.config import Settings
from northstar.common.identity import RequestContext, new_request_id
from northstar.mcp_gateway.tools.builtin import builtin_tools
from northstar.mcp_gateway.tools.catalog import Catalog
from northstar.runtime import Runtime

NOTES_SPEC: dict[str, Any] = {
    "schema_version": 1,
    "tool_id": "notes",
    "title": "Notes",
    "description": "Plain-text notes kept as media assets.",
    "scopes": [
        {
            "name": "notes.write",
            "description": "Write notes.",
            "firearm": "firearm.notes.write",
            "operations": [
                {
                    "name": "add_note",
                    "title": "Add note",
                    "description": "Add a plain-text note.",
                    "wraps": "media_v2.create_asset",
                    "input": {
                        "presets": {"mime_type": "text/plain"},
                        "restrict": {"name": {"maxLength": 80}},
                        "hide": ["content_base64"],
                    },
                }
            ],
        },
        {
            "name": "notes.read",
            "description": "Read notes.",
            "operations": [
                {
                    "name": "list_notes",
                    "description": "List notes, at most ten at a time.",
                    "wraps": "media_v2.list_assets",
                    "input": {"restrict": {"limit": {"maximum": 10}}},
                }
            ],
        },
    ],
    "kpis": [{"kpi_id": "p95", "metric": "latency_p95_ms", "target": 500, "window": "5m", "owner": "ops"}],
}


def notes_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(NOTES_SPEC)
    spec.update(changes)
    return spec


def context(tenant: str = "acme", user: str = "alice", *, admin: bool = False) -> RequestContext:
    return RequestContext(request_id=new_request_id(), tenant=tenant, user=user, is_admin=admin)


def builtin_catalog() -> Catalog:
    catalog = Catalog()
    for tool in builtin_tools():
        catalog.add(tool, None)
    return catalog


class WorkbenchRuntime(Runtime):
    """The gateway's own runtime (its composition root includes the workbench children)."""


@contextlib.asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[Any]:
    """The runtime in explicit ``headers`` mode: these tests act as many principals by header
    (admins come from an admin key, see :func:`admin_headers`)."""
    runtime = WorkbenchRuntime(Settings(data_dir=data_dir, log_level="WARNING", auth_mode="headers"))
    async with runtime.running() as services:
        _RUNTIMES[id(services)] = runtime
        try:
            yield services
        finally:
            del _RUNTIMES[id(services)]


_RUNTIMES: dict[int, Runtime] = {}


def workbench(services: Any) -> Any:
    """The workbench part of the runtime that ``services`` came from (its watcher, its actors)."""
    return _RUNTIMES[id(services)].workbench


async def admin_headers(services: Any, tenant: str = "acme", user: str = "admin") -> dict[str, str]:
    """Headers of an admin: a bearer admin key (no identity header makes an admin)."""
    secret, _ = await services.keys.create(tenant, user, admin=True, provenance="cli")
    return {"Authorization": f"Bearer {secret}"}


async def own_record(services: Any, ctx: RequestContext, audit_seq: int) -> dict[str, Any]:
    """The audit record a non-admin caller's ``audit_seq`` (its ``tenant_seq``) names."""
    [entry] = await services.audit.query(tenant=ctx.tenant, user=ctx.user, by_tenant_seq=True,
                                         after_seq=audit_seq - 1, limit=1)
    assert entry.tenant_seq == audit_seq
    record: dict[str, Any] = entry.record
    return record
