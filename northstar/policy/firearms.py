"""Firearms: licences that guard scopes.

A *binding* ties a scope to a firearm (``media.write -> firearm.media.write``); a scope with
no binding is open. An *approval rule* marks a scope ``approval: required``: its calls pass the
gates, then wait for a human approver, a principal granted the rule's approver firearm
(``firearm.approve`` unless the rule names another, e.g. ``firearm.approve.media``). A *grant*
gives a firearm to one user of one tenant, optionally until an expiry, recording who granted it
and why. Bindings are gateway-wide; grants are
tenant-scoped.

:class:`FirearmsPolicyStore` persists both in the versioned store (every change is a new
version, so the history of a grant is kept). :class:`FirearmsService` serves decisions
from an in-memory snapshot: writes made through it update the snapshot at once (so a
revocation takes effect on the next call), and a refresher picks up changes made by other
gateway replicas. When the snapshot cannot be refreshed for longer than
``max_staleness_s`` the service fails closed: :meth:`FirearmsService.check_access` raises
``ServiceUnavailable`` (503), it never answers from stale policy.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from northstar.common import errors as E
from northstar.common.errors import PolicyUnavailable
from northstar.common.identity import TENANT_HEADER, USER_HEADER, RequestContext, validate_value
from northstar.common.limits import FIREARM_PATTERN, SCOPE_PATTERN
from northstar.storage import kinds
from northstar.storage.changes import ChangeBell

log = logging.getLogger("northstar.policy.firearms")

GLOBAL_TENANT = "_global"
FIREARM_NAME = re.compile(FIREARM_PATTERN)
SCOPE_NAME = re.compile(SCOPE_PATTERN)
POLICY_KINDS = (kinds.FIREARM_BINDINGS, kinds.FIREARM_GRANTS, kinds.APPROVAL_RULES)


def check_firearm_name(name: str) -> str:
    if not isinstance(name, str) or not FIREARM_NAME.fullmatch(name):
        raise E.ValidationFailed("firearm names look like firearm.<area>.<action>", field="firearm")
    return name


def check_scope_name(name: str) -> str:
    if not isinstance(name, str) or not SCOPE_NAME.fullmatch(name):
        raise E.ValidationFailed("invalid scope name", field="scope")
    return name


def parse_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise E.ValidationFailed("expires_at must be an ISO-8601 timestamp", field="expires_at") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Grant:
    tenant: str
    user: str
    firearm: str
    granted_by: str | None
    reason: str | None
    granted_at: str
    expires_at: str | None = None

    def active(self, now: float) -> bool:
        expiry = parse_time(self.expires_at)
        return expiry is None or now < expiry

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AccessDecision:
    scope: str
    firearm: str | None
    allowed: bool
    granted: frozenset[str]
    approver: str | None = None  # the approver firearm when the scope requires approval


DEFAULT_APPROVER = "firearm.approve"


class FirearmsPolicyStore:
    """Bindings and grants in the versioned store."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def save_binding(self, scope: str, firearm: str | None, *, actor: str | None, **extra: Any) -> None:
        data = None if firearm is None else {"scope": scope, "firearm": firearm, **extra}
        await self.store.save(GLOBAL_TENANT, kinds.FIREARM_BINDINGS, scope, data, actor=actor)

    async def save_approval_rule(self, scope: str, rule: dict[str, Any] | None, *, actor: str | None) -> None:
        await self.store.save(GLOBAL_TENANT, kinds.APPROVAL_RULES, scope, rule, actor=actor)

    async def binding_ever_set(self, scope: str) -> bool:
        return await self.store.get(GLOBAL_TENANT, kinds.FIREARM_BINDINGS, scope) is not None

    async def save_grant(self, grant: Grant | None, tenant: str, user: str, firearm: str, actor: str | None) -> None:
        data = None if grant is None else grant.to_dict()
        await self.store.save(tenant, kinds.FIREARM_GRANTS, f"{user}:{firearm}", data, actor=actor)

    async def load_all(self) -> tuple[dict[str, dict[str, Any]], list[Grant], dict[str, dict[str, Any]]]:
        """Every live binding, grant and approval rule, across tenants."""
        events = await self._all_changes()
        bindings: dict[str, dict[str, Any]] = {}
        rules: dict[str, dict[str, Any]] = {}
        grants: list[Grant] = []
        seen: set[tuple[str, str, str]] = set()
        for ev in events:
            key = (ev.tenant, ev.kind, ev.resource_id)
            if key in seen:
                continue
            seen.add(key)
            rec = await self.store.get(ev.tenant, ev.kind, ev.resource_id)
            if rec is None or rec.data is None:
                continue
            if ev.kind == kinds.FIREARM_BINDINGS:
                bindings[rec.resource_id] = rec.data
            elif ev.kind == kinds.APPROVAL_RULES:
                rules[rec.resource_id] = rec.data
            else:
                grants.append(Grant(**rec.data))
        return bindings, grants, rules

    async def _all_changes(self) -> list[Any]:
        out: list[Any] = []
        cursor = 0
        while True:
            batch = await self.store.changes_since(cursor, POLICY_KINDS)
            if not batch:
                return out
            out.extend(batch)
            cursor = batch[-1].change_id

    async def last_change_id(self) -> int:
        cursor = 0
        while True:
            batch = await self.store.changes_since(cursor, POLICY_KINDS)
            if not batch:
                return cursor
            cursor = batch[-1].change_id


class FirearmsService:
    """Decisions from a snapshot of bindings and grants; writes go through to the store."""

    def __init__(
        self,
        store: Any,
        *,
        clock: Callable[[], float] = time.time,
        refresh_interval_s: float = 1.0,
        max_staleness_s: float = 5.0,
        changes: ChangeBell | None = None,
    ) -> None:
        self.policy_store = FirearmsPolicyStore(store)
        self.changes = changes or ChangeBell()
        self.clock = clock
        self.refresh_interval_s = refresh_interval_s
        self.max_staleness_s = max_staleness_s
        self._bindings: dict[str, dict[str, Any]] = {}
        self._grants: dict[tuple[str, str], dict[str, Grant]] = {}
        self._rules: dict[str, dict[str, Any]] = {}
        self._fresh_at: float | None = None
        self._cursor = 0
        self._lock = trio.Lock()
        self.listeners: list[Callable[[], None]] = []

    # -- snapshot -------------------------------------------------------------------------
    async def load(self) -> None:
        # Under the lock, like every write made through this service: a snapshot read while a
        # revoke commits must not be installed after it (that would resurrect the grant until
        # the next refresh).
        async with self._lock:
            cursor = await self.policy_store.last_change_id()
            bindings, grants, rules = await self.policy_store.load_all()
            self._bindings = bindings
            self._rules = rules
            self._grants = {}
            for g in grants:
                self._grants.setdefault((g.tenant, g.user), {})[g.firearm] = g
            self._cursor = cursor
            self._fresh_at = trio.current_time()
        self._notify()

    async def refresh_once(self) -> None:
        try:
            batch = await self.policy_store.store.changes_since(self._cursor, POLICY_KINDS)
            if batch:
                await self.load()
            else:
                self._fresh_at = trio.current_time()
        except E.ServiceUnavailable:
            log.warning("policy refresh failed; serving the snapshot until it is stale")

    async def run(self, *, task_status: trio.TaskStatus[FirearmsService] = trio.TASK_STATUS_IGNORED) -> None:
        await self.load()
        task_status.started(self)
        await self.follow()

    async def follow(self) -> None:
        """Refresh when another replica changed bindings or grants (the store's bell), and at
        least every ``refresh_interval_s`` (the fallback, and what keeps the snapshot fresh)."""
        with self.changes.subscribe(POLICY_KINDS) as sub:
            while True:
                await sub.wait(self.refresh_interval_s)
                await self.refresh_once()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def ensure_fresh(self) -> None:
        if self._fresh_at is None or trio.current_time() - self._fresh_at > self.max_staleness_s:
            raise PolicyUnavailable(retry_after=1)

    # -- decisions ------------------------------------------------------------------------
    def bindings(self) -> dict[str, str]:
        return {scope: b["firearm"] for scope, b in self._bindings.items()}

    def granted(self, tenant: str, user: str) -> frozenset[str]:
        now = self.clock()
        grants = self._grants.get((tenant, user), {})
        return frozenset(f for f, g in grants.items() if g.active(now))

    def check_access(self, ctx: RequestContext, scope: str) -> AccessDecision:
        """The firearm decision for ``ctx`` calling ``scope`` (fails closed when stale)."""
        self.ensure_fresh()
        binding = self._bindings.get(scope)
        firearm = binding["firearm"] if binding else None
        granted = self.granted(ctx.tenant, ctx.user)
        return AccessDecision(scope, firearm, firearm is None or firearm in granted, granted, self.approver_for(scope))

    def approver_for(self, scope: str) -> str | None:
        """The firearm an approver of ``scope``'s calls needs, or None when they need no approval."""
        rule = self._rules.get(scope)
        return str(rule.get("approver_firearm") or DEFAULT_APPROVER) if rule else None

    def may_approve(self, tenant: str, user: str, scope: str) -> bool:
        """Whether ``tenant/user`` holds the approver firearm of ``scope`` (in the caller's tenant)."""
        approver = self.approver_for(scope)
        return approver is not None and approver in self.granted(tenant, user)

    # -- administration -------------------------------------------------------------------
    async def bind(self, scope: str, firearm: str, *, actor: str | None, **extra: Any) -> dict[str, Any]:
        check_scope_name(scope)
        check_firearm_name(firearm)
        async with self._lock:
            await self.policy_store.save_binding(scope, firearm, actor=actor, **extra)
            self._bindings[scope] = {"scope": scope, "firearm": firearm, **extra}
        self._notify()
        return {"scope": scope, "firearm": firearm, **extra}

    async def unbind(self, scope: str, *, actor: str | None) -> None:
        check_scope_name(scope)
        async with self._lock:
            if scope not in self._bindings:
                raise E.NotFound(f"scope {scope} has no firearm binding", scope=scope)
            await self.policy_store.save_binding(scope, None, actor=actor)
            self._bindings.pop(scope, None)
        self._notify()

    async def require_approval(self, scope: str, *, approver_firearm: str | None = None, actor: str | None,
                               **extra: Any) -> dict[str, Any]:
        """Mark ``scope`` ``approval: required``; its approvers hold ``approver_firearm``."""
        check_scope_name(scope)
        rule = {"scope": scope, "approval": "required",
                "approver_firearm": check_firearm_name(approver_firearm or DEFAULT_APPROVER), **extra}
        async with self._lock:
            await self.policy_store.save_approval_rule(scope, rule, actor=actor)
            self._rules[scope] = rule
        self._notify()
        return dict(rule)

    async def clear_approval(self, scope: str, *, actor: str | None) -> None:
        check_scope_name(scope)
        async with self._lock:
            if scope not in self._rules:
                raise E.NotFound(f"scope {scope} does not require approval", scope=scope)
            await self.policy_store.save_approval_rule(scope, None, actor=actor)
            self._rules.pop(scope, None)
        self._notify()

    def approval_rules(self) -> dict[str, str]:
        """scope -> approver firearm, for every scope that requires approval."""
        return {scope: str(r.get("approver_firearm") or DEFAULT_APPROVER) for scope, r in self._rules.items()}

    def list_approval_rules(self) -> list[dict[str, Any]]:
        return [dict(r) for _, r in sorted(self._rules.items())]

    async def ensure_default_bindings(self, defaults: Mapping[str, str]) -> None:
        """Bind shipped defaults, unless an operator has ever set that scope."""
        for scope, firearm in defaults.items():
            if not await self.policy_store.binding_ever_set(scope):
                await self.bind(scope, firearm, actor="northstar:defaults")

    async def grant(
        self,
        tenant: str,
        user: str,
        firearm: str,
        *,
        granted_by: str | None,
        reason: str | None = None,
        expires_at: str | None = None,
    ) -> Grant:
        validate_value(TENANT_HEADER, tenant)
        validate_value(USER_HEADER, user)
        check_firearm_name(firearm)
        if parse_time(expires_at) is not None and parse_time(expires_at) <= self.clock():  # type: ignore[operator]
            raise E.ValidationFailed("expires_at is in the past", field="expires_at")
        grant = Grant(tenant, user, firearm, granted_by, reason, iso_now(), expires_at)
        async with self._lock:
            await self.policy_store.save_grant(grant, tenant, user, firearm, granted_by)
            self._grants.setdefault((tenant, user), {})[firearm] = grant
        self._notify()
        return grant

    async def revoke(self, tenant: str, user: str, firearm: str, *, actor: str | None) -> None:
        async with self._lock:
            if firearm not in self._grants.get((tenant, user), {}):
                raise E.NotFound("no such grant", tenant=tenant, user=user, firearm=firearm)
            await self.policy_store.save_grant(None, tenant, user, firearm, actor)
            self._grants[(tenant, user)].pop(firearm, None)
        self._notify()

    def list_bindings(self) -> list[dict[str, Any]]:
        return [dict(b) for _, b in sorted(self._bindings.items())]

    def list_grants(self, tenant: str | None = None) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for (t, _u), grants in sorted(self._grants.items()):
            if tenant is not None and t != tenant:
                continue
            for g in grants.values():
                out.append({**g.to_dict(), "active": g.active(now)})
        return out
