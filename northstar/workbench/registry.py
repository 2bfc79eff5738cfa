"""The component registry (immutable packages) and the activation overlays that make them live.

Two artifacts, kept apart on purpose (policy is not content):

*Package* (kind ``component_registry``, tenant ``_global``, resource ``"{tool_id}@{version}"``),
written once with ``expected_version=0`` so a second save of the same version is a
``Conflict``; it never changes afterwards::

    {"tool_id", "version", "spec": <the spec without firearms or KPIs>,
     "schemas": {canonical op name: {"inputSchema", "outputSchema"}},
     "content_hash", "published_by", "published_at",
     "source": {"draft_id", "draft_version", "tenant"}}

``content_hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8 kept)
of ``{tool_id, version, spec, schemas}``: key order never changes it, any content change does.

*Overlay* (kind ``activation_overlays``, tenant ``_global``, resource ``tool_id``, one version
per change): which package is live and under which policy::

    {"tool_id", "package_version", "package_hash", "firearm_bindings": {scope: firearm|null},
     "kpi_bindings": [...], "active", "action": "publish"|"rollback"|"unpublish",
     "published_by", "published_at", "previous": {"version", "hash"} | null}
"""

from __future__ import annotations

import hashlib
from typing import Any

from northstar.common.errors import InvalidDefinition, NotFound
from northstar.storage.core import canonical_json, utc_now_iso
from northstar.storage.kinds import ACTIVATION_OVERLAYS, COMPONENT_REGISTRY
from northstar.storage.records import Record
from northstar.workbench.definition import ToolSpec

GLOBAL_TENANT = "_global"
_PAGE = 500


def content_hash(tool_id: str, version: str, spec: dict[str, Any], schemas: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``{tool_id, version, spec, schemas}``."""
    body = {"tool_id": tool_id, "version": version, "spec": spec, "schemas": schemas}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def package_id(tool_id: str, version: str) -> str:
    return f"{tool_id}@{version}"


def semver_key(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in version.split("."))
    return major, minor, patch


def bump_patch(version: str) -> str:
    major, minor, patch = semver_key(version)
    return f"{major}.{minor}.{patch + 1}"


def package_spec(spec: ToolSpec) -> dict[str, Any]:
    """The spec as it goes into a package: no firearm or approval per scope, no KPIs (they are policy)."""
    data = spec.to_json()
    data.pop("kpis", None)
    for scope in data["scopes"]:
        scope.pop("firearm", None)
        scope.pop("approval", None)
    return data


def make_package(
    spec: ToolSpec, schemas: dict[str, Any], *, published_by: str, source: dict[str, Any]
) -> dict[str, Any]:
    """A package document for ``spec`` (whose ``version`` must be set)."""
    assert spec.version is not None
    body = package_spec(spec)
    return {
        "tool_id": spec.tool_id,
        "version": spec.version,
        "spec": body,
        "schemas": schemas,
        "content_hash": content_hash(spec.tool_id, spec.version, body, schemas),
        "published_by": published_by,
        "published_at": utc_now_iso(),
        "source": source,
    }


def verify_package(package: dict[str, Any]) -> None:
    """Raise InvalidDefinition unless the package's content still hashes to its content_hash."""
    expected = content_hash(package["tool_id"], package["version"], package["spec"], package["schemas"])
    if expected != package.get("content_hash"):
        raise InvalidDefinition("package content does not match its content_hash",
                                errors=[{"path": "/content_hash", "message": "hash mismatch"}])


def package_summary(package: dict[str, Any]) -> dict[str, Any]:
    return {"id": package_id(package["tool_id"], package["version"]), "tool_id": package["tool_id"],
            "version": package["version"], "content_hash": package["content_hash"]}


class ComponentRegistry:
    """Immutable packages in the versioned store."""

    kind = COMPONENT_REGISTRY

    def __init__(self, store: Any) -> None:
        self.store = store

    async def save(self, package: dict[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        """Store a new package; ``Conflict`` if that version was ever published."""
        rid = package_id(package["tool_id"], package["version"])
        await self.store.save(GLOBAL_TENANT, self.kind, rid, package, expected_version=0, actor=actor)
        return package

    async def get(self, tool_id: str, version: str) -> dict[str, Any]:
        rec = await self.store.get(GLOBAL_TENANT, self.kind, package_id(tool_id, version))
        if rec is None or rec.data is None:
            raise NotFound(f"no package {tool_id}@{version}", tool_id=tool_id, version=version)
        data: dict[str, Any] = rec.data
        return data

    async def list_versions(self, tool_id: str) -> list[dict[str, Any]]:
        """Every package of ``tool_id``, oldest version first (semver order)."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = await self.store.list(GLOBAL_TENANT, self.kind, prefix=f"{tool_id}@", after=after, limit=_PAGE)
            out.extend(r.data for r in page if r.data is not None)
            if len(page) < _PAGE:
                return sorted(out, key=lambda p: semver_key(p["version"]))
            after = page[-1].resource_id

    async def latest(self, tool_id: str) -> dict[str, Any] | None:
        versions = await self.list_versions(tool_id)
        return versions[-1] if versions else None


class OverlayStore:
    """Activation overlays: one versioned resource per tool id."""

    kind = ACTIVATION_OVERLAYS

    def __init__(self, store: Any) -> None:
        self.store = store

    async def current(self, tool_id: str) -> Record | None:
        rec: Record | None = await self.store.get(GLOBAL_TENANT, self.kind, tool_id)
        return rec

    async def save(self, overlay: dict[str, Any], *, expected_version: int, actor: str | None) -> Record:
        rec: Record = await self.store.save(GLOBAL_TENANT, self.kind, overlay["tool_id"], overlay,
                                            expected_version=expected_version, actor=actor)
        return rec

    async def history(self, tool_id: str) -> list[Record]:
        recs: list[Record] = await self.store.history(GLOBAL_TENANT, self.kind, tool_id)
        return recs

    async def all_current(self) -> list[Record]:
        """The latest overlay of every tool ever published."""
        out: list[Record] = []
        after: str | None = None
        while True:
            page = await self.store.list(GLOBAL_TENANT, self.kind, after=after, limit=_PAGE)
            out.extend(page)
            if len(page) < _PAGE:
                return out
            after = page[-1].resource_id


def overlay_view(rec: Record) -> dict[str, Any]:
    """An overlay record as the API shows it."""
    data = rec.data or {}
    return {"id": f"{rec.resource_id}#{rec.version}", "tool_id": rec.resource_id, "version": rec.version,
            "created_at": rec.created_at, "actor": rec.actor, **data}
