"""Making packages live: published tool actors and their catalogue entries.

:class:`ToolHost` runs the actors of published tools as dynamic children of the runtime's
``tools`` supervisor (``start_child`` / ``terminate_child``), each published version under
its own one-child supervisor so that a crash-looping tool stops alone.

:class:`LiveTools` is the single writer of published entries in the catalogue; the
publisher and the registry watcher both go through it, under one lock. Activation:

1. rebuild the :class:`ToolDefinition` from the package (its hash and schemas are checked:
   a built-in that changed under a published package is refused, not silently served);
2. make sure every scope the overlay guards is guarded in the local firearm snapshot
   (reloading it once if needed) so a tool never goes live unguarded on a replica;
3. start the new actor, swap the catalogue entry (listeners signal ``tools/list_changed``),
   then stop the previous actor in an orderly way (it finishes what it was serving).

A package wrapping an upstream MCP server's tools is built from the definitions it recorded
(never from what the upstream lists now), its operations find the running upstream through
``upstreams`` (the hub), and activation approves its pins on the upstream: the baseline
drift is measured against, on this gateway and on every replica that activates it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

import actors
from northstar.common.errors import InvalidDefinition, StoreUnavailable
from northstar.mcp_gateway.tools.actor import ToolActor, contained_tool_child
from northstar.mcp_gateway.tools.model import ToolDefinition
from northstar.storage.core import canonical_json
from northstar.workbench.definition import ToolSpec, build_tool, tool_schemas
from northstar.workbench.registry import verify_package

log = logging.getLogger("northstar.workbench.live")
STOP_GRACE_S = 5.0
TOOL_CAPACITY = 1024


class ToolHost:
    """Runs published tool actors as dynamic children of the runtime's ``tools`` supervisor.

    Each published version is a contained child (:func:`actors.contained`): a crashing
    handler is restarted (stable :class:`actors.ActorRef`) within its own intensity; past it,
    only that tool is down (503) until its backoff has passed, never the built-ins beside it.
    """

    def __init__(self, supervisor: Callable[[], actors.Supervisor | None], *, max_restarts: int = 5,
                 period: float = 10.0) -> None:
        self._supervisor = supervisor
        self.max_restarts = max_restarts
        self.period = period
        self._seen: actors.Supervisor | None = None
        self._generation = 0

    @property
    def generation(self) -> int:
        """Changes whenever the tools supervisor was replaced (its children, ours too, are gone)."""
        sup = self._supervisor()
        if sup is not self._seen:
            self._seen = sup
            self._generation += 1
        return self._generation

    def _current(self) -> actors.Supervisor:
        sup = self._supervisor()
        if sup is None:
            raise StoreUnavailable("the tools supervisor is not running", retry_after=1)
        return sup

    async def start(self, child_id: str, factory: Callable[[], actors.Actor[Any, Any]]) -> actors.ActorRef[Any, Any]:
        spec = contained_tool_child(child_id, factory, capacity=TOOL_CAPACITY, max_restarts=self.max_restarts,
                                    period=self.period, shutdown_timeout=STOP_GRACE_S + 1)
        try:
            ref: actors.ActorRef[Any, Any] = await self._current().start_child(spec)  # type: ignore[assignment]
        except actors.ActorStopped:
            raise StoreUnavailable("the tools supervisor is stopping", retry_after=1) from None
        return ref

    async def stop(self, child_id: str) -> None:
        sup = self._supervisor()
        if sup is None:
            return
        try:
            await sup.terminate_child(child_id)
        except KeyError:  # already gone (it gave up, or the supervisor was replaced)
            pass

    def running(self) -> list[str]:
        sup = self._supervisor()
        if sup is None:
            return []
        return sorted(c.id for c in sup.stats().children if c.id.startswith("published:") and c.running)


@dataclass(slots=True)
class LiveTool:
    tool: ToolDefinition
    child_id: str
    overlay_version: int
    generation: int


class LiveTools:
    """The published part of the catalogue (one writer, under a lock)."""

    def __init__(self, catalog: Any, host: ToolHost, firearms: Any, services: Any, upstreams: Any = None) -> None:
        self.catalog = catalog
        self.host = host
        self.firearms = firearms
        self.services = services  # handed to the wrapped built-in handlers (media_v2)
        self.upstreams = upstreams  # the UpstreamHub: where upstream operations are sent, pins approved
        self._live: dict[str, LiveTool] = {}
        self._lock = trio.Lock()

    def get(self, tool_id: str) -> LiveTool | None:
        return self._live.get(tool_id)

    def stale(self) -> bool:
        """True when the host restarted under us: every published actor has to be started again."""
        return any(t.generation != self.host.generation for t in self._live.values())

    def tool_of(self, package: dict[str, Any]) -> ToolDefinition:
        """The ToolDefinition a package describes (its hash and schemas verified)."""
        verify_package(package)
        spec = ToolSpec.model_validate(package["spec"])
        tool = build_tool(spec, self.catalog, package_hash=package["content_hash"], upstreams=self.upstreams)
        if canonical_json(tool_schemas(tool)) != canonical_json(package["schemas"]):
            raise InvalidDefinition(f"{tool.tool_id}@{tool.version}: the wrapped operations changed since "
                                    "it was published; publish a new version",
                                    errors=[{"path": "/schemas", "message": "schema mismatch"}])
        return tool

    async def activate(self, package: dict[str, Any], overlay: dict[str, Any], overlay_version: int) -> bool:
        """Serve ``package`` under ``overlay``; False if that (or a newer) overlay is already live."""
        tool_id = package["tool_id"]
        async with self._lock:
            current = self._live.get(tool_id)
            fresh = current is not None and current.generation == self.host.generation
            if fresh and current is not None and current.overlay_version >= overlay_version:
                return False
            await self._ensure_guarded(overlay.get("firearm_bindings") or {}, overlay.get("approval_bindings") or {})
            await self._approve(package)
            same = fresh and current is not None and current.tool.package_hash == package["content_hash"]
            if same and current is not None:
                current.overlay_version = overlay_version  # policy-only change: same actor, same entry
                return True
            tool = self.tool_of(package)
            child_id = f"published:{tool_id}@{tool.version}#{overlay_version}"
            ref = await self.host.start(child_id, lambda: ToolActor(tool))
            self.catalog.add(tool, ref, self.services)
            self._live[tool_id] = LiveTool(tool, child_id, overlay_version, self.host.generation)
            if current is not None:
                await self.host.stop(current.child_id)
            log.info("tool live", extra={"tool": tool_id, "version": tool.version, "hash": tool.package_hash})
            return True

    async def deactivate(self, tool_id: str, overlay_version: int | None = None) -> bool:
        """Take a published tool out of the catalogue and stop its actor."""
        async with self._lock:
            current = self._live.get(tool_id)
            if current is None:
                return False
            if overlay_version is not None and current.overlay_version > overlay_version:
                return False
            del self._live[tool_id]
            entry = self.catalog.get(tool_id)
            if entry is not None and not entry.tool.builtin:
                self.catalog.remove(tool_id)
            await self.host.stop(current.child_id)
            return True

    async def reset(self) -> None:
        """Forget every live tool (after a host restart); the watcher then loads them again."""
        async with self._lock:
            for tool_id, live in list(self._live.items()):
                entry = self.catalog.get(tool_id)
                if entry is not None and not entry.tool.builtin:
                    self.catalog.remove(tool_id)
                if live.generation == self.host.generation:
                    await self.host.stop(live.child_id)
            self._live.clear()

    async def _approve(self, package: dict[str, Any]) -> None:
        block = package["spec"].get("upstream")
        if block and self.upstreams is not None:
            await self.upstreams.approve(block["name"], block.get("pins") or {})

    async def _ensure_guarded(self, bindings: dict[str, str | None], approvals: dict[str, str | None]) -> None:
        """Serve no scope the overlay guards (a firearm, an approval) before this replica's
        policy snapshot guards it too."""
        guarded = [scope for scope, firearm in bindings.items() if firearm]
        held = [scope for scope, approval in approvals.items() if approval == "required"]
        if (not guarded and not held) or self.firearms is None:
            return
        if not self._missing(guarded, held):
            return
        await self.firearms.load()  # another replica bound it a moment ago: read the store now
        missing = self._missing(guarded, held)
        if missing:
            raise StoreUnavailable(f"policy for {', '.join(missing)} is not visible yet", retry_after=1)

    def _missing(self, guarded: list[str], held: list[str]) -> list[str]:
        bound, rules = self.firearms.bindings(), self.firearms.approval_rules()
        return [s for s in guarded if s not in bound] + [s for s in held if s not in rules]
