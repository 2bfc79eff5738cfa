"""Publishing: draft -> immutable package -> activation overlay -> live tool.

:class:`PublisherService` holds the logic; the :class:`~.actor.Publisher` actor serialises
it (one change at a time per gateway). Every change needs the admin permission and leaves
an audit record ``{"event": "publish", "action": "publish"|"rollback"|"unpublish", ...}``
naming the package version and hash.

Publish (``publish(ctx, draft_id, version)``):

1. load the draft version; :func:`validate_spec` against the live catalogue and firearm
   bindings; :func:`lint_spec` (any problem: ``InvalidDefinition``, 422, with reasons);
2. collisions (``NameCollision``, 409): the tool id of a built-in, a tool id already
   published from another draft or tenant, a scope name owned by another tool;
3. the version: the spec's (must be newer than the latest published) or the latest's
   patch + 1, or 1.0.0; the package is written once (a second save: ``Conflict``);
4. policy, then overlay: firearm bindings that *guard* are written before the overlay
   (so no replica ever serves the scope unguarded), bindings that open a scope after it;
   KPI bindings are saved for the publisher's tenant;
5. live: the tool actor starts and the catalogue entry is swapped (``list_changed``).

Rollback writes a new overlay pointing at an older package, restoring the firearm and
KPI bindings that were live with that version. Unpublish writes an inactive overlay and
takes the tool out of the catalogue; packages and firearm bindings stay.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.storage.core import utc_now_iso
from northstar.workbench.definition import ToolSpec, build_tool, tool_schemas, validate_spec
from northstar.workbench.lint import lint_spec, lint_upstream
from northstar.workbench.publisher.live import LiveTools
from northstar.workbench.registry import (
    ComponentRegistry,
    OverlayStore,
    bump_patch,
    make_package,
    overlay_view,
    package_summary,
    semver_key,
    verify_package,
)

log = logging.getLogger("northstar.workbench.publisher")


def require_admin(ctx: RequestContext) -> None:
    if not ctx.is_admin:
        raise E.AdminRequired()


def next_version(requested: str | None, latest: str | None) -> str:
    if requested is None:
        return bump_patch(latest) if latest else "1.0.0"
    if latest is not None and semver_key(requested) <= semver_key(latest):
        raise E.Conflict(f"version {requested} is not newer than the latest published {latest}",
                         current_version=latest)
    return requested


class PublisherService:
    def __init__(
        self,
        *,
        drafts: Any,
        registry: ComponentRegistry,
        overlays: OverlayStore,
        catalog: Any,
        firearms: Any,
        kpi: Any,
        audit: Any,
        live: LiveTools | None,
        upstreams: Any = None,
    ) -> None:
        self.drafts = drafts
        self.registry = registry
        self.overlays = overlays
        self.catalog = catalog
        self.firearms = firearms
        self.kpi = kpi
        self.audit = audit
        self.live = live
        self.upstreams = upstreams

    # -- publish --------------------------------------------------------------------------
    async def publish(self, ctx: RequestContext, draft_id: str, version: int | None) -> dict[str, Any]:
        require_admin(ctx)
        draft = await self.drafts.get_draft(ctx.tenant, draft_id, version)
        spec = validate_spec(draft.spec, self.catalog, bindings=self._bindings())
        problems = lint_spec(spec) + lint_upstream(spec)
        if problems:
            raise E.InvalidDefinition("the definition failed the publish lint", errors=problems)
        latest = await self.registry.latest(spec.tool_id)
        await self._check_collisions(ctx, spec, draft_id, latest)
        version_str = next_version(spec.version, latest["version"] if latest else None)
        spec = spec.model_copy(update={"version": version_str})
        tool = build_tool(spec, self.catalog, upstreams=self.upstreams)
        source = {"draft_id": draft_id, "draft_version": draft.version, "tenant": ctx.tenant}
        package = make_package(spec, tool_schemas(tool), published_by=ctx.principal, source=source)
        await self.registry.save(package, actor=ctx.principal)
        kpis = [self._kpi(ctx, spec.tool_id, k) for k in spec.kpis]
        return await self._activate(ctx, package, spec.firearm_bindings(), kpis, "publish", source,
                                    spec.approval_bindings())

    def _kpi(self, ctx: RequestContext, tool_id: str, raw: dict[str, Any]) -> dict[str, Any]:
        return {"owner": ctx.principal, **raw, "tool_name": tool_id}

    async def _check_collisions(
        self, ctx: RequestContext, spec: ToolSpec, draft_id: str, latest: dict[str, Any] | None
    ) -> None:
        tool_id = spec.tool_id
        entry = self.catalog.get(tool_id)
        if entry is not None and entry.tool.builtin:
            raise E.NameCollision(f"{tool_id} is the name of a built-in tool", tool_id=tool_id)
        if latest is not None:
            src = latest.get("source") or {}
            if (src.get("tenant"), src.get("draft_id")) != (ctx.tenant, draft_id):
                raise E.NameCollision(f"{tool_id} is already published from another draft or tenant",
                                      tool_id=tool_id)
        owners = await self._scope_owners()
        for scope in spec.scopes:
            owner = owners.get(scope.name)
            if owner is not None and owner != tool_id:
                raise E.NameCollision(f"scope {scope.name} belongs to tool {owner}", scope=scope.name, tool_id=owner)

    async def _scope_owners(self) -> dict[str, str]:
        owners = {scope.name: tool.tool_id for tool in self.catalog.tools() for scope in tool.scopes}
        for rec in await self.overlays.all_current():
            if rec.data and rec.data.get("active"):
                for scope in rec.data.get("firearm_bindings") or {}:
                    owners.setdefault(scope, rec.resource_id)
        return owners

    def _bindings(self) -> dict[str, str] | None:
        return self.firearms.bindings() if self.firearms is not None else None

    # -- rollback / unpublish -------------------------------------------------------------
    async def rollback(self, ctx: RequestContext, tool_id: str, to_version: str) -> dict[str, Any]:
        require_admin(ctx)
        package = await self.registry.get(tool_id, to_version)
        verify_package(package)
        bindings, kpis, approvals = await self._policy_of(tool_id, package)
        return await self._activate(ctx, package, bindings, kpis, "rollback", package.get("source") or {}, approvals)

    async def _policy_of(self, tool_id: str, package: dict[str, Any]) -> tuple[
            dict[str, str | None], list[Any], dict[str, str | None]]:
        """The firearm, KPI and approval bindings last live with this package (else: open scopes,
        no KPIs, no approvals)."""
        for rec in reversed(await self.overlays.history(tool_id)):
            data = rec.data or {}
            if data.get("package_hash") == package["content_hash"] and data.get("action") != "unpublish":
                return (dict(data.get("firearm_bindings") or {}), list(data.get("kpi_bindings") or []),
                        dict(data.get("approval_bindings") or {}))
        opened = {scope["name"]: None for scope in package["spec"]["scopes"]}
        return dict(opened), [], dict(opened)

    async def unpublish(self, ctx: RequestContext, tool_id: str) -> dict[str, Any]:
        require_admin(ctx)
        current = await self.overlays.current(tool_id)
        if current is None or not current.data or not current.data.get("active"):
            raise E.NotFound(f"{tool_id} is not published", tool_id=tool_id)
        data = current.data
        overlay = {**data, "active": False, "action": "unpublish", "published_by": ctx.principal,
                   "published_at": utc_now_iso(),
                   "previous": {"version": data["package_version"], "hash": data["package_hash"]}}
        rec = await self.overlays.save(overlay, expected_version=current.version, actor=ctx.principal)
        if self.live is not None:
            await self.live.deactivate(tool_id, rec.version)
        seq = await self._audit(ctx, "unpublish", tool_id, data["package_version"], data["package_hash"], rec.version)
        return {"overlay": self._overlay_summary(rec), "audit_seq": seq}

    # -- the shared tail: policy, overlay, live, audit -------------------------------------
    async def _activate(
        self,
        ctx: RequestContext,
        package: dict[str, Any],
        bindings: Mapping[str, str | None],
        kpis: list[dict[str, Any]],
        action: str,
        source: dict[str, Any],
        approvals: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        tool_id, version, digest = package["tool_id"], package["version"], package["content_hash"]
        current = await self.overlays.current(tool_id)
        prev = current.data if current is not None and current.data and current.data.get("active") else None
        ref = {"tool_id": tool_id, "package_version": version, "package_hash": digest}
        await self._guard_scopes(ctx, bindings, ref)
        await self._hold_scopes(ctx, approvals or {}, ref)
        overlay = {
            **ref,
            "firearm_bindings": dict(bindings),
            "approval_bindings": dict(approvals or {}),
            "kpi_bindings": kpis,
            "active": True,
            "action": action,
            "published_by": ctx.principal,
            "published_at": utc_now_iso(),
            "previous": {"version": prev["package_version"], "hash": prev["package_hash"]} if prev else None,
        }
        expected = current.version if current is not None else 0
        rec = await self.overlays.save(overlay, expected_version=expected, actor=ctx.principal)
        await self._open_scopes(ctx, bindings)
        await self._release_scopes(ctx, approvals or {})
        await self._save_kpis(ctx, kpis, ref)
        if self.live is not None:
            await self.live.activate(package, overlay, rec.version)
        seq = await self._audit(ctx, action, tool_id, version, digest, rec.version, source)
        return {"package": package_summary(package), "overlay": self._overlay_summary(rec), "audit_seq": seq}

    @staticmethod
    def _overlay_summary(rec: Any) -> dict[str, Any]:
        view = overlay_view(rec)
        return {k: view.get(k) for k in ("id", "tool_id", "version", "package_version", "package_hash", "active")}

    async def _guard_scopes(self, ctx: RequestContext, bindings: Mapping[str, str | None], ref: dict[str, Any]) -> None:
        if self.firearms is None:
            return
        for scope, firearm in bindings.items():
            if firearm is not None:
                await self.firearms.bind(scope, firearm, actor=ctx.principal, **ref)

    async def _hold_scopes(self, ctx: RequestContext, approvals: Mapping[str, str | None], ref: dict[str, Any]) -> None:
        """Approval rules that hold calls are written before the overlay, like guarding bindings."""
        if self.firearms is None:
            return
        for scope, approval in approvals.items():
            if approval == "required":
                await self.firearms.require_approval(scope, actor=ctx.principal, **ref)

    async def _release_scopes(self, ctx: RequestContext, approvals: Mapping[str, str | None]) -> None:
        if self.firearms is None:
            return
        live = self.firearms.approval_rules()
        for scope, approval in approvals.items():
            if approval is None and scope in live:
                await self.firearms.clear_approval(scope, actor=ctx.principal)

    async def _open_scopes(self, ctx: RequestContext, bindings: Mapping[str, str | None]) -> None:
        if self.firearms is None:
            return
        live = self.firearms.bindings()
        for scope, firearm in bindings.items():
            if firearm is None and scope in live:
                await self.firearms.unbind(scope, actor=ctx.principal)

    async def _save_kpis(self, ctx: RequestContext, kpis: list[dict[str, Any]], ref: dict[str, Any]) -> None:
        if self.kpi is None or not kpis:
            return
        from northstar.kpi.models import KpiBinding

        extra = {k: ref[k] for k in ("package_version", "package_hash") if k in KpiBinding.model_fields}
        actor = f"{ctx.principal} (publish {ref['tool_id']}@{ref['package_version']} sha256:{ref['package_hash']})"
        for raw in kpis:
            binding = KpiBinding.model_validate({**raw, **extra})
            await self.kpi.save_kpi_binding(ctx.tenant, binding, actor=actor)

    async def _audit(self, ctx: RequestContext, action: str, tool_id: str, version: str, digest: str,
                     overlay_version: int, source: dict[str, Any] | None = None) -> int | None:
        if self.audit is None:
            return None
        record = {
            "event": "publish", "action": action, "request_id": ctx.request_id, "tenant": ctx.tenant,
            "user": ctx.user, "principal": ctx.principal, "transport": ctx.transport.value,
            "tool": tool_id, "tool_version": version, "package_hash": digest, "overlay_version": overlay_version,
            "source": source or None,
        }
        return int((await self.audit.append(record)).seq)

    # -- reads ----------------------------------------------------------------------------
    async def packages(self, tool_id: str) -> list[dict[str, Any]]:
        versions = await self.registry.list_versions(tool_id)
        if not versions:
            raise E.NotFound(f"no packages for {tool_id}", tool_id=tool_id)
        return versions

    async def package(self, tool_id: str, version: str) -> dict[str, Any]:
        return await self.registry.get(tool_id, version)

    async def overlay(self, tool_id: str) -> dict[str, Any]:
        history = await self.overlays.history(tool_id)
        if not history:
            raise E.NotFound(f"{tool_id} was never published", tool_id=tool_id)
        views = [overlay_view(r) for r in history]
        return {"tool_id": tool_id, "current": views[-1], "history": views}
