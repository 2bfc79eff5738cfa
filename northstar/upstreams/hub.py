"""The running federation of one gateway: registrations, live and sandbox units, pins, drift.

:class:`UpstreamHub` is what the composition root builds and the doors use. It keeps the
registrations in the store (:class:`~northstar.upstreams.registry.UpstreamRegistry`, secrets
sealed) and the running units in step, on this gateway and on every replica:

* ``upstreams``: two supervisors (``upstreams.live``, ``upstreams.sandbox``) whose dynamic
  children are the upstream units (:class:`~northstar.upstreams.host.UpstreamHost`); an
  upstream with a declared sandbox target (``sandbox_url`` / ``sandbox_command``) has a
  second unit on the sandbox host, so sandbox runs never share a connection or a process
  with live calls;
* ``upstreams.watcher``: starts every registered upstream, then follows the ``upstreams``
  resource kind (``changes_since``, when the store's change bell rings and every 0.5 s) so a
  registration or removal made through another replica or the CLI reaches this one; and audits
  drift (``event: upstream_drift``) as the units report it (at connect, on
  ``notifications/tools/list_changed``, on refresh).

It is also the directory calls use (:class:`~northstar.mcp_gateway.tools.model.UpstreamDirectory`):
``port(name)`` / ``sandbox_port(name)`` give the running handle. Approved pins (from the
published packages) are remembered by name and handed to a unit whenever it (re)starts.

Who sees what (:meth:`UpstreamHub.view`): admins the public registration (secret *names*
only) and the full status; anyone else the name, transport, state, tool count and drift.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

import actors
from northstar.common.errors import Conflict, NorthstarError, NotFound, UpstreamDrift, UpstreamUnavailable
from northstar.storage.changes import ChangeBell
from northstar.storage.kinds import UPSTREAM_DRIFT, UPSTREAMS
from northstar.upstreams.draft import GeneratedDraft, generate_draft
from northstar.upstreams.host import UpstreamHandle, UpstreamHost
from northstar.upstreams.messages import ToolsChanged
from northstar.upstreams.pins import UpstreamTool
from northstar.upstreams.registry import GLOBAL_TENANT, StoredUpstream, UpstreamRegistry
from northstar.upstreams.spec import UpstreamSpec

log = logging.getLogger("northstar.upstreams")

POLL_INTERVAL_S = 0.5
EVENTS = 256  # drift events waiting to be audited; past it they are dropped (and logged)
PUBLIC_FIELDS = ("name", "transport", "state", "tool_count", "drift")


class UpstreamHub:
    """Registrations and running upstreams kept in step; the directory calls reach them by."""

    def __init__(self, registry: UpstreamRegistry, audit: Any = None, *, interval_s: float = POLL_INTERVAL_S,
                 changes: ChangeBell | None = None) -> None:
        self.registry = registry
        self.changes = changes or ChangeBell()
        self.audit = audit
        self.interval_s = interval_s
        self._live_sup: actors.Supervisor | None = None
        self._sandbox_sup: actors.Supervisor | None = None
        self.live = UpstreamHost(lambda: self._live_sup)
        self.sandbox = UpstreamHost(lambda: self._sandbox_sup)
        self.approved: dict[str, dict[str, str]] = {}
        self.running: dict[str, int] = {}  # name -> registration version its units run
        self.failed: dict[str, str] = {}  # name -> why its units could not start (e.g. secrets)
        self.known: set[str] = set()  # names registered, as last seen
        self._audited: dict[str, tuple[tuple[str, ...], ...]] = {}
        # Drift any replica saw (kind upstream_drift): name -> {tool: pin as listed, None: gone}.
        self.drifted: dict[str, dict[str, str | None]] = {}
        self._send, self._events = trio.open_memory_channel[ToolsChanged](EVENTS)
        self._cursor = 0
        self._lock = trio.Lock()

    # ------------------------------------------------------------------ the directory
    def port(self, name: str) -> UpstreamHandle | None:
        return self.live.get(name)

    def sandbox_port(self, name: str) -> UpstreamHandle | None:
        return self.sandbox.get(name)

    def shared_drift(self, name: str, tool: str, pin: str) -> UpstreamDrift | None:
        seen = self.drifted.get(name, {})
        if tool not in seen or seen[tool] == pin:
            return None
        how = "is no longer listed" if seen[tool] is None else "changed since it was approved"
        return UpstreamDrift(f"upstream {name}: {tool} {how} (seen by a replica); approve the change first",
                             upstream=name, changed=[] if seen[tool] is None else [tool],
                             removed=[tool] if seen[tool] is None else [], added=[])

    # ------------------------------------------------------------------ the tree
    def children(self) -> list[actors.ChildSpec]:
        """In start order: the hosts' supervisors, then the watcher (which starts the units)."""
        return [actors.ChildSpec("upstreams", self._run_hosts), actors.ChildSpec("upstreams.watcher", self._watch)]

    async def _run_hosts(self, *, task_status: trio.TaskStatus[UpstreamHub] = trio.TASK_STATUS_IGNORED) -> None:
        live = actors.Supervisor("upstreams.live", [], max_restarts=20, period=60.0)
        sandbox = actors.Supervisor("upstreams.sandbox", [], max_restarts=20, period=60.0)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(live.run)
                await nursery.start(sandbox.run)
                self._live_sup, self._sandbox_sup = live, sandbox
                self.running.clear()  # fresh supervisors: the watcher starts every unit again
                task_status.started(self)
        finally:
            self._live_sup = self._sandbox_sup = None
            self.live.forget_all()
            self.sandbox.forget_all()

    async def _watch(self, *, task_status: trio.TaskStatus[UpstreamHub] = trio.TASK_STATUS_IGNORED) -> None:
        self._cursor = 0
        await self.poll_once()
        task_status.started(self)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._audit_drift)
            with self.changes.subscribe([UPSTREAMS, UPSTREAM_DRIFT]) as sub:
                while True:
                    await sub.wait(self.interval_s)  # another replica's registration rings at once
                    await self.poll_once()

    async def poll_once(self) -> None:
        """Apply every registration change since the last poll, and start what is not running."""
        try:
            names = await self._changed()
        except NorthstarError as err:
            log.warning("upstream registrations could not be read; retrying", extra={"code": err.code})
            return
        names |= set(self.failed)
        names |= {n for n in self.known if self.live.get(n) is None}  # e.g. after the hosts restarted
        for name in sorted(names):
            await self.sync(name)

    async def _changed(self) -> set[str]:
        names: set[str] = set()
        while True:
            batch = await self.registry.store.changes_since(self._cursor, [UPSTREAMS, UPSTREAM_DRIFT])
            if not batch:
                return names
            names.update(ev.resource_id for ev in batch if ev.kind == UPSTREAMS)
            for name in sorted({ev.resource_id for ev in batch if ev.kind == UPSTREAM_DRIFT}):
                await self._load_drift(name)
            self._cursor = batch[-1].change_id

    async def _load_drift(self, name: str) -> None:
        rec = await self.registry.store.get(GLOBAL_TENANT, UPSTREAM_DRIFT, name)
        tools = (rec.data or {}).get("tools") if rec is not None else None
        if isinstance(tools, dict) and tools:
            self.drifted[name] = {str(k): (v if isinstance(v, str) else None) for k, v in tools.items()}
        else:
            self.drifted.pop(name, None)

    async def _share_drift(self, event: ToolsChanged) -> None:
        """Record the drifted tools' pins as this replica listed them, for every replica (an
        empty record once this replica's listing matches the approved pins again)."""
        gone = event.drift.removed
        tools: dict[str, str | None] = {t: event.tools[t].pin for t in event.drift.changed if t in event.tools}
        tools.update(dict.fromkeys(gone))
        if tools == self.drifted.get(event.upstream, {}):
            return  # already what every replica reads
        await self.registry.store.save(GLOBAL_TENANT, UPSTREAM_DRIFT, event.upstream,
                                       {"tools": tools, "reason": event.reason}, actor="northstar:drift")
        if tools:
            self.drifted[event.upstream] = dict(tools)
        else:
            self.drifted.pop(event.upstream, None)

    async def sync(self, name: str) -> None:
        """Make the running units of ``name`` match its current registration (or stop them)."""
        async with self._lock:
            stored = await self.registry.get(name)
            if stored is None:
                self.known.discard(name)
                await self._stop(name)
                return
            self.known.add(name)
            if self.running.get(name) == stored.version and self.live.get(name) is not None:
                return
            try:
                spec = await self.registry.load(name)
                await self._start(spec, stored.version)
            except NorthstarError as err:
                self.failed[name] = err.message
                log.error("upstream not started", extra={"upstream": name, "code": err.code, "reason": err.message})

    async def _start(self, spec: UpstreamSpec, version: int) -> None:
        pins = self.approved.get(spec.name)
        await self.live.start(spec, pins=pins, on_event=self._on_event)
        sandbox = spec.sandbox()
        if sandbox is not None:
            await self.sandbox.start(sandbox, pins=pins)
        else:
            await self.sandbox.stop(spec.name)
        self.running[spec.name] = version
        self.failed.pop(spec.name, None)

    async def _stop(self, name: str) -> None:
        await self.live.stop(name)
        await self.sandbox.stop(name)
        self.running.pop(name, None)
        self.failed.pop(name, None)
        self._audited.pop(name, None)

    # ------------------------------------------------------------------ drift
    def _on_event(self, event: ToolsChanged) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            log.warning("upstream drift event dropped (too many waiting)", extra={"upstream": event.upstream})

    async def _audit_drift(self) -> None:
        async for event in self._events:
            try:  # first, and for every listing: the pins may change while the drifted names do not
                await self._share_drift(event)
            except NorthstarError as err:
                log.error("upstream drift not shared", extra={"upstream": event.upstream, "code": err.code})
            key = (event.drift.changed, event.drift.removed, event.drift.added)
            if self._audited.get(event.upstream) == key:
                continue
            self._audited[event.upstream] = key
            if event.drift.clean or self.audit is None:
                continue
            record = {"event": "upstream_drift", "transport": "internal", "upstream": event.upstream,
                      "reason": event.reason, **event.drift.to_dict()}
            try:
                await self.audit.append(record)
            except NorthstarError as err:
                log.error("upstream drift not audited", extra={"upstream": event.upstream, "code": err.code})

    async def approve(self, name: str, pins: Mapping[str, str]) -> None:
        """Pins a published package approved: the baseline drift is measured against."""
        self.approved[name] = dict(pins)
        for host in (self.live, self.sandbox):
            handle = host.get(name)
            if handle is not None:
                try:
                    await handle.approve(pins)
                except NorthstarError as err:  # the unit is stopping: its next start gets the pins
                    log.warning("pins not handed to the upstream", extra={"upstream": name, "code": err.code})

    # ------------------------------------------------------------------ what the doors call
    async def audit_change(self, action: str, name: str, actor: str, transport: str, version: int | None) -> None:
        if self.audit is not None:
            await self.audit.append({"event": "upstream", "action": action, "upstream": name, "version": version,
                                     "principal": actor, "transport": transport})

    async def register(self, spec: UpstreamSpec, *, actor: str, replace: bool = False,
                       expected_version: int | None = None, transport: str = "http") -> StoredUpstream:
        """Save and start. A name already registered is a ``Conflict`` unless ``replace`` or
        ``expected_version`` (the version being replaced) says so."""
        expected = expected_version if expected_version is not None else (None if replace else 0)
        try:
            stored = await self.registry.register(spec, actor=actor, expected_version=expected)
        except Conflict as err:
            if expected == 0:
                raise Conflict(f"an upstream named {spec.name} is registered; pass replace (or expected_version) "
                               "to change it", current_version=err.details.get("current_version")) from None
            raise
        await self.audit_change("register", spec.name, actor, transport, stored.version)
        async with self._lock:
            self.known.add(spec.name)
            await self._start(spec, stored.version)
        return stored

    async def delete(self, name: str, *, actor: str, expected_version: int | None = None,
                     transport: str = "http") -> None:
        if not await self.registry.delete(name, actor=actor, expected_version=expected_version):
            raise NotFound(f"no upstream named {name!r}", upstream=name)
        await self.audit_change("remove", name, actor, transport, None)
        async with self._lock:
            self.known.discard(name)
            await self._stop(name)

    async def stored(self, name: str) -> StoredUpstream:
        found = await self.registry.get(name)
        if found is None:
            raise NotFound(f"no upstream named {name!r}", upstream=name)
        return found

    def status(self, name: str) -> dict[str, Any]:
        handle = self.live.get(name)
        if handle is not None:
            return handle.status().to_dict()
        return {"name": name, "state": "stopped", "last_error": self.failed.get(name), "tool_count": 0,
                "drift": None}

    def view(self, stored: StoredUpstream, *, admin: bool) -> dict[str, Any]:
        status = self.status(stored.name)
        if not admin:
            return {"name": stored.name, "transport": stored.spec.get("transport"), "state": status.get("state"),
                    "tool_count": status.get("tool_count", 0), "drift": status.get("drift")}
        sandbox = self.sandbox.get(stored.name)
        return {**stored.to_dict(), "transport": stored.spec.get("transport"), "state": status.get("state"),
                "tool_count": status.get("tool_count", 0), "drift": status.get("drift"), "status": status,
                "sandbox": None if sandbox is None else {"state": sandbox.status().state},
                "approved": sorted(self.approved.get(stored.name, {}))}

    async def tools(self, name: str) -> dict[str, UpstreamTool]:
        """The upstream's tools as last listed (waits for a first listing within its connect bound)."""
        await self.stored(name)
        handle = self.live.get(name)
        if handle is None:
            why = self.failed.get(name) or "it is not running"
            raise UpstreamUnavailable(f"upstream {name}: {why}", upstream=name, retry_after=1)
        wait = min(handle.session.spec.connect_timeout_s, 60.0)
        reply = (await handle.tools(wait_s=wait)).unwrap()
        return dict(reply.tools)

    async def draft(self, name: str) -> GeneratedDraft:
        stored = await self.stored(name)
        tools = await self.tools(name)
        return generate_draft(name, tools, title=stored.spec.get("title"), description=stored.spec.get("description"))

    def health(self) -> dict[str, Any]:
        """Each upstream's state and whether it drifted (for ``/health``; never fails it)."""
        out: dict[str, Any] = {}
        for name in sorted(set(self.running) | set(self.failed)):
            status = self.status(name)
            out[name] = {"state": status.get("state"), "drift": bool(status.get("drift")),
                         "tool_count": status.get("tool_count", 0)}
        return out


def tool_view(tool: UpstreamTool) -> dict[str, Any]:
    """One listed tool as the API shows it: its definition (wire form), pin and hints."""
    return {"name": tool.name, "pin": tool.pin, "title": tool.title, "description": tool.description,
            "inputSchema": tool.input_schema, "outputSchema": tool.output_schema,
            "annotations": tool.annotations, "read_only": tool.read_only, "destructive": tool.destructive}


