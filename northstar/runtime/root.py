"""The composition root: every part of a gateway process, built from typed parts, and its tree.

:func:`compose` builds the parts in dependency order (nothing runs yet: actors' refs come from
their specs), and :meth:`Runtime.running` runs them as this supervision tree::

    open_store (SQLite / PostgreSQL; its audit flusher is the single group-commit writer)
    └── Supervisor "northstar" (one_for_one)
        ├── store            contained: StoreActor, the versioned store, by messages
        ├── policy.firearms  contained: FirearmsService refresher (bindings and grants snapshot)
        ├── tools            Supervisor: one contained ToolActor per tool (echo, media_v2, published)
        ├── gate_chain       contained: GateChain actor, every call from every door
        ├── upstreams        the upstream units (live and sandbox hosts): one supervised unit per
        │                    upstream MCP server, started and stopped at run time
        ├── upstreams.watcher contained: starts the registered upstreams, follows registrations
        │                    (kind ``upstreams``) and audits drift
        ├── workbench.*      contained: draft store, publisher, registry watcher
        ├── mcp.sessions     contained: list_changed notifier for connected MCP sessions
        ├── limits.releaser  contained, with shared limits (Redis): gives call slots back in batches
        └── http | stdio     Hypercorn serving the front door, or the stdio transport

Children start in this order and stop in reverse, so the front door closes first and
the store last.

Every subsystem is *contained* (:func:`actors.contained`): restarted within its own
intensity, and past it down (its callers get 503, ``/health`` names it) until a backoff
delay has passed and it is started again. A crash storm in one subsystem therefore never
reaches the root, whose intensity only guards the front end: restart intensity measures
faults, and no sequence of client requests can end the process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

import actors
from northstar.common.config import Settings
from northstar.kpi.measure import Metrics
from northstar.kpi.service import KpiService
from northstar.mcp_gateway.facade.gateway import Gateway
from northstar.mcp_gateway.facade.tools_client import ToolsClient
from northstar.mcp_gateway.tools.actor import ToolActor, contained_tool_child
from northstar.mcp_gateway.tools.blobs import BlobStore
from northstar.mcp_gateway.tools.builtin import DEFAULT_FIREARM_BINDINGS, builtin_tools
from northstar.mcp_gateway.tools.catalog import Catalog
from northstar.mcp_gateway.tools.media_v2 import MediaServices
from northstar.mcp_gateway.tools.model import ToolDefinition
from northstar.mcp_gateway.transports.mcp_face import SessionRegistry
from northstar.mcp_gateway.transports.services import Services
from northstar.policy.approvals import ApprovalDesk
from northstar.policy.auth import Authenticator, KeyService
from northstar.policy.firearms import FirearmsService
from northstar.policy.gate_chain import GateChain, GateChainConfig, decision_parts
from northstar.policy.oauth import JwtVerifier
from northstar.policy.shared_limits import SharedLimits, shared_limits_for
from northstar.runtime import telemetry as runtime_telemetry
from northstar.runtime.telemetry import Telemetry
from northstar.storage import Storage, open_store, options_for
from northstar.storage.actor import StoreActor, StoreClient
from northstar.upstreams.hub import UpstreamHub
from northstar.upstreams.registry import UpstreamRegistry
from northstar.upstreams.secrets import SecretBox
from northstar.workbench.drafts.service import DraftService
from northstar.workbench.sandbox.runner import SandboxRunner
from northstar.workbench.wiring import Workbench, WorkbenchParts, draft_validator

log = logging.getLogger("northstar.runtime")

# A subsystem may restart 5 times in 30 s; past that it is down for 1 s, then 2, 4 ... 30 s
# between attempts, while the rest of the gateway serves (and answers 503 for it).
SUBSYSTEM_RESTARTS, SUBSYSTEM_PERIOD_S = 5, 30.0
SUBSYSTEM_BACKOFF = actors.Backoff(initial=1.0, factor=2.0, maximum=30.0)
# Tools whose handlers never wait serve one message at a time: no task per call.
SERIAL_TOOLS = frozenset({"echo"})

FrontFactory = Callable[[Services], actors.ChildSpec]


def subsystem(spec: actors.ChildSpec) -> actors.ChildSpec:
    return actors.contained(spec, max_restarts=SUBSYSTEM_RESTARTS, period=SUBSYSTEM_PERIOD_S,
                            backoff=SUBSYSTEM_BACKOFF)


@dataclass(frozen=True, slots=True)
class Composed:
    """The parts of one gateway process: what the doors get, and the children that run them."""

    services: Services
    children: list[actors.ChildSpec]
    tools: ToolsBay
    workbench: Workbench
    upstreams: UpstreamHub


def compose(settings: Settings, storage: Storage, root: Callable[[], actors.Supervisor | None],
            telemetry: Telemetry | None = None) -> Composed:
    """Every part, in dependency order; nothing runs until the children are started."""
    telemetry = telemetry if telemetry is not None else runtime_telemetry.from_environment({})
    store_spec = subsystem(actors.actor_child("store", lambda: StoreActor(storage.store), capacity=4096))
    store = StoreClient(actors.ref_of(store_spec))
    sessions = SessionRegistry()
    catalog = Catalog()
    catalog.listeners.append(sessions.signal)
    firearms = FirearmsService(store, changes=storage.changes)
    firearms.listeners.append(sessions.signal)
    media = MediaServices(store, BlobStore(settings.blobs_dir or settings.data_dir / "blobs"), settings.media_max_bytes)
    tools = ToolsBay(settings, catalog, media)
    approvals = ApprovalDesk(store, storage.audit, firearms, ttl_s=settings.approval_ttl_s)
    shared = shared_limits_for(settings)
    admission, runner = decision_parts(gate_chain_config(settings), storage.audit, approvals, shared)
    runner.tracing, runner.meters = telemetry.tracing, telemetry.meters
    if hasattr(storage.audit, "on_commit"):
        storage.audit.on_commit = telemetry.meters.audit_committed
        storage.audit.tracing = telemetry.tracing
        if settings.audit_commit_lone_inline:
            storage.audit.lone = admission.alone  # a lone call commits in its own task (storage/audit.py)
    gate_spec = subsystem(actors.actor_child(
        "gate_chain", lambda: GateChain(catalog, firearms, storage.audit, admission, runner), capacity=8192))
    metrics = Metrics(meters=telemetry.meters)
    metrics.audit = storage.audit
    gateway = Gateway(catalog=catalog, firearms=firearms, gate_chain=actors.ref_of(gate_spec), runner=runner,
                      unauthorized_tools=settings.unauthorized_tools, tool_timeout_max_s=settings.tool_timeout_max_s,
                      on_result=metrics.record, approvals=approvals, tracing=telemetry.tracing)
    keys = KeyService(store)
    kpi = KpiService(store)
    drafts = DraftService(store, validate=draft_validator(catalog, firearms))
    upstreams = UpstreamHub(UpstreamRegistry(store, SecretBox.from_file(settings.resolved_secrets_key_file)),
                            storage.audit, changes=storage.changes)
    workbench = Workbench(WorkbenchParts(store=store, audit=storage.audit, catalog=catalog, firearms=firearms,
                                         media=media, kpi=kpi, drafts=drafts, tools_supervisor=tools.current,
                                         upstreams=upstreams, changes=storage.changes))
    metrics.supervisors = [root, tools.current]
    metrics.upstream_states = partial(upstream_states, upstreams)
    services = Services(
        settings=settings, storage=storage, audit=storage.audit, store=store, catalog=catalog, firearms=firearms,
        keys=keys, authenticator=Authenticator(keys, trust_headers=settings.trust_identity_headers,
                                               oauth=JwtVerifier.from_settings(settings)),
        gateway=gateway, tools=ToolsClient(gateway), drafts=drafts, kpi=kpi, media=media, metrics=metrics,
        sandbox=SandboxRunner(gateway, catalog, drafts, tmp_root=settings.data_dir / "sandbox",
                              max_bytes=settings.media_max_bytes, upstreams=upstreams),
        publisher=workbench.publisher, sessions=sessions, approvals=approvals,
        health=partial(health_report, root, tools.current, upstreams, shared), upstreams=upstreams, limits=shared,
    )
    hosts, watcher = upstreams.children()
    children = [
        store_spec,
        subsystem(actors.ChildSpec("policy.firearms", partial(run_firearms, firearms))),
        actors.ChildSpec("tools", tools.run),  # each tool is contained inside
        gate_spec,
        hosts,  # each upstream is its own unit inside (a failing one stops alone)
        subsystem(watcher),
        *(subsystem(spec) for spec in workbench.children()),
        subsystem(actors.ChildSpec("mcp.sessions", sessions.run)),
        # Releases the slots calls give back on the shared limits engine, in batches.
        *([subsystem(actors.ChildSpec("limits.releaser", shared.run_releaser))] if shared.backend != "local" else []),
    ]
    return Composed(services, children, tools, workbench, upstreams)


def upstream_states(upstreams: UpstreamHub) -> dict[str, str]:
    return {name: str(status.get("state")) for name, status in upstreams.health().items()}


def gate_chain_config(settings: Settings) -> GateChainConfig:
    return GateChainConfig(
        tool_timeout_s=settings.tool_timeout_s,
        tool_timeout_max_s=settings.tool_timeout_max_s,
        max_in_flight=settings.max_concurrent_calls_per_principal,
        rate_per_s=settings.rate_limit_per_principal_per_s,
        burst=settings.rate_limit_burst,
    )


async def run_firearms(firearms: FirearmsService, *,
                       task_status: trio.TaskStatus[FirearmsService] = trio.TASK_STATUS_IGNORED) -> None:
    """Load the bindings and grants snapshot, then keep it fresh. The service object outlives a
    restart of this child (the gate chain and gateway hold it): only the refresher restarts."""
    await firearms.load()
    await firearms.ensure_default_bindings(DEFAULT_FIREARM_BINDINGS)
    task_status.started(firearms)
    await firearms.follow()


class ToolsBay:
    """The ``tools`` supervisor: one contained actor per built-in tool; published tools join it
    at run time (:class:`~northstar.workbench.publisher.live.ToolHost`)."""

    def __init__(self, settings: Settings, catalog: Catalog, media: MediaServices) -> None:
        self.catalog = catalog
        self.media = media
        self.tools = builtin_tools()
        if settings.enable_diagnostics:
            from northstar.mcp_gateway.tools.diagnostics import DIAGNOSTICS

            self.tools.append(DIAGNOSTICS)
        self.supervisor: actors.Supervisor | None = None

    def current(self) -> actors.Supervisor | None:
        return self.supervisor

    async def run(self, *, task_status: trio.TaskStatus[actors.Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        # Each tool under its own small supervisor: a crash storm stops that tool (503), it
        # never escalates to the root and takes the gateway down. A new supervisor on every
        # (re)start: published tools notice it (ToolHost.generation) and start theirs again.
        specs = [contained_tool_child(f"tool:{t.tool_id}", _tool_factory(t), capacity=1024) for t in self.tools]
        sup = self.supervisor = actors.Supervisor("tools", specs, max_restarts=10, period=10.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for tool, spec in zip(self.tools, specs, strict=True):
                self.catalog.add(tool, actors.ref_of(spec), self.media if tool.tool_id == "media_v2" else None)
            task_status.started(sup)


def _tool_factory(tool: ToolDefinition) -> Callable[[], ToolActor]:
    concurrency = 1 if tool.tool_id in SERIAL_TOOLS else 64
    return lambda: ToolActor(tool, max_concurrency=concurrency)


def health_report(root: Callable[[], actors.Supervisor | None], tools: Callable[[], actors.Supervisor | None],
                  upstreams: UpstreamHub | None = None, shared: SharedLimits | None = None) -> dict[str, Any]:
    """What ``/health`` reports: each contained subsystem ``up`` or ``down``, tools that are down,
    and each upstream's state (an upstream that is down costs only its own calls). With shared
    limits, the ``limits`` subsystem: ``up``, ``degraded`` (Redis unreachable, per-process limits:
    fail open) or ``down`` (calls refused: fail closed)."""
    report: dict[str, Any] = {"subsystems": {}, "tools_down": [], "upstreams": upstreams.health() if upstreams else {}}
    if (sup := root()) is not None:
        for child in sup.stats().children:
            if child.contained is not None:
                report["subsystems"][child.id] = "up" if child.contained.up else "down"
    if shared is not None and (state := shared.health()) is not None:
        report["subsystems"]["limits"] = state
    if (tools_sup := tools()) is not None:
        report["tools_down"] = [c.id.removeprefix("tool:") for c in tools_sup.stats().children
                                if c.contained is not None and not c.contained.up]
    return report


class Runtime:
    """One gateway process: ``async with Runtime(settings).running(front) as services``."""

    def __init__(self, settings: Settings, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        # Traces and metrics: given (tests, the benchmark), else as the OTEL_* variables ask.
        self.telemetry = telemetry
        self.shutdown = trio.Event()
        self.ready = trio.Event()  # set once every child has started
        self.root: actors.Supervisor | None = None
        self._composed: Composed | None = None

    @property
    def services(self) -> Services:
        if self._composed is None:
            raise RuntimeError("the runtime is not running")
        return self._composed.services

    @property
    def tools_supervisor(self) -> actors.Supervisor | None:
        return None if self._composed is None else self._composed.tools.supervisor

    @property
    def workbench(self) -> Workbench:
        if self._composed is None:
            raise RuntimeError("the runtime is not running")
        return self._composed.workbench

    @contextlib.asynccontextmanager
    async def running(self, front: FrontFactory | None = None, *, front_first: bool = False) -> AsyncIterator[Services]:
        """Open the store, compose the parts, start the tree; on exit stop it in reverse order.

        ``front`` builds the door's child from the services. ``front_first`` starts it before
        everything else (stdio: answer the client's handshake while the rest starts; its
        handlers wait for ``ready``)."""
        url = self.settings.resolved_store_url()
        telemetry = self.telemetry
        if telemetry is None:
            telemetry = self.telemetry = runtime_telemetry.from_environment()
        async with (_event_loop_for(url), open_store(url, **options_for(self.settings)) as storage,
                    _closing(telemetry)):
            composed = self._composed = compose(self.settings, storage, lambda: self.root, telemetry)
            children = list(composed.children)
            if front is not None:
                spec = front(composed.services)
                children = [spec, *children] if front_first else [*children, spec]
            self.root = actors.Supervisor("northstar", children, max_restarts=5, period=30.0)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.root.run)
                self.ready.set()
                try:
                    yield composed.services
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(self.settings.shutdown_grace_s + 5):
                        await self.root.stop()
                    nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _closing(telemetry: Telemetry) -> AsyncIterator[None]:
    """Flush the spans still queued when the runtime stops (the exporter's own thread, bounded)."""
    try:
        yield
    finally:
        if telemetry.provider is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await trio.to_thread.run_sync(telemetry.close, abandon_on_cancel=True)


@contextlib.asynccontextmanager
async def _event_loop_for(url: str) -> AsyncIterator[None]:
    """PostgreSQL runs asyncpg through trio-asyncio: open its loop around everything."""
    if url.startswith(("postgres://", "postgresql://")):
        import trio_asyncio

        async with trio_asyncio.open_loop():
            yield
    else:
        yield
