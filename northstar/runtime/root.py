"""The composition root: the supervision tree of a northstar gateway process.

Reading :meth:`Runtime.children` shows the whole system::

    open_store (SQLite / PostgreSQL; its audit flusher is the single group-commit writer)
    └── Supervisor "northstar" (one_for_one)
        ├── store            contained: StoreActor, the versioned store, by messages
        ├── policy.firearms  contained: FirearmsService refresher (bindings and grants snapshot)
        ├── tools            Supervisor: one contained ToolActor per tool (echo, media_v2, published)
        ├── gate_chain       contained: GateChain actor, every call from every door
        ├── services         wiring (runs once)
        ├── workbench.*      contained: draft store, publisher, registry watcher
        ├── mcp.sessions     contained: list_changed notifier for connected MCP sessions
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
from dataclasses import dataclass, field
from typing import Any, cast

import trio

import actors
from northstar.common.config import Settings
from northstar.kpi.service import KpiService
from northstar.mcp_gateway.facade import tools_client as tools_api
from northstar.mcp_gateway.facade.gateway import Gateway
from northstar.mcp_gateway.tools.actor import ToolActor, contained_tool_child
from northstar.mcp_gateway.tools.blobs import BlobStore
from northstar.mcp_gateway.tools.builtin import DEFAULT_FIREARM_BINDINGS, builtin_tools
from northstar.mcp_gateway.tools.catalog import Catalog
from northstar.mcp_gateway.tools.media_v2 import MediaServices
from northstar.mcp_gateway.transports.mcp_face import SessionRegistry
from northstar.policy.auth import Authenticator, KeyService
from northstar.policy.firearms import FirearmsService
from northstar.policy.gate_chain import GateChain, GateChainConfig
from northstar.policy.oauth import JwtVerifier
from northstar.storage import open_store, options_for
from northstar.storage.actor import StoreActor, StoreClient
from northstar.workbench.drafts.service import DraftService
from northstar.workbench.wiring import wire, workbench_children

log = logging.getLogger("northstar.runtime")


@dataclass
class Services:
    """Handles to the running system, given to the front ends when they are built."""

    settings: Settings
    storage: Any = None
    store: Any = None
    audit: Any = None
    catalog: Catalog = field(default_factory=Catalog)
    firearms: Any = None
    keys: Any = None
    authenticator: Any = None
    gateway: Any = None
    drafts: Any = None
    kpi: Any = None
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    media: Any = None
    metrics: Any = None
    publisher: Any = None
    sandbox: Any = None
    subsystems: Callable[[], dict[str, Any]] | None = None  # Runtime.subsystems, for /health
    extras: dict[str, Any] = field(default_factory=dict)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = Services(settings=settings)
        self.services.subsystems = self.subsystems
        self.shutdown = trio.Event()
        self.ready = trio.Event()  # set once every child has started
        self.root: actors.Supervisor | None = None
        self.tools_sup: actors.Supervisor | None = None

    # -- children -------------------------------------------------------------------------
    def children(self, front: actors.ChildSpec | None, *, front_first: bool = False) -> list[actors.ChildSpec]:
        specs = [
            subsystem(actors.actor_child("store", self.make_store_actor, capacity=4096)),
            subsystem(actors.ChildSpec("policy.firearms", self.start_firearms)),
            actors.ChildSpec("tools", self.start_tools),  # each tool is contained inside
            subsystem(actors.actor_child("gate_chain", self.make_gate_chain, capacity=8192)),
            actors.ChildSpec("services", self.start_services, restart=actors.Restart.TEMPORARY),
            *(subsystem(spec) for spec in workbench_children(self)),
            subsystem(actors.ChildSpec("mcp.sessions", self.services.sessions.run)),
        ]
        if front is None:
            return specs
        return [front, *specs] if front_first else [*specs, front]

    def subsystems(self) -> dict[str, Any]:
        """What ``/health`` reports: each contained subsystem ``up`` or ``down``, and tools that are down."""
        report: dict[str, Any] = {"subsystems": {}, "tools_down": []}
        if self.root is not None:
            for child in self.root.stats().children:
                if child.contained is not None:
                    report["subsystems"][child.id] = "up" if child.contained.up else "down"
        if self.tools_sup is not None:
            report["tools_down"] = [c.id.removeprefix("tool:") for c in self.tools_sup.stats().children
                                    if c.contained is not None and not c.contained.up]
        return report

    def make_store_actor(self) -> StoreActor:
        return StoreActor(self.services.storage.store)

    async def start_firearms(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        svc = self.services
        assert self.root is not None
        svc.store = StoreClient(cast(Any, self.root.get("store")))
        firearms = svc.firearms
        if firearms is None:
            # Created once: the gate chain and gateway hold it. A restart of this child only
            # restarts the refresher, so nobody keeps a snapshot that will never refresh.
            firearms = svc.firearms = FirearmsService(svc.store)
            firearms.listeners.append(svc.sessions.signal)
        await firearms.load()
        await firearms.ensure_default_bindings(DEFAULT_FIREARM_BINDINGS)
        task_status.started(firearms)
        while True:
            await trio.sleep(firearms.refresh_interval_s)
            await firearms.refresh_once()

    async def start_tools(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        svc = self.services
        data_dir = self.settings.data_dir
        svc.media = MediaServices(svc.store, BlobStore(data_dir / "blobs"), self.settings.media_max_bytes)
        tools = builtin_tools()
        if self.settings.enable_diagnostics:
            from northstar.mcp_gateway.tools.diagnostics import DIAGNOSTICS

            tools.append(DIAGNOSTICS)
        # Each tool under its own small supervisor: a crash storm stops that tool (503), it
        # never escalates to the root and takes the gateway down.
        contained = [contained_tool_child(f"tool:{t.tool_id}", _tool_factory(t), capacity=1024) for t in tools]
        self.tools_sup = actors.Supervisor("tools", contained, max_restarts=10, period=10.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.tools_sup.run)
            for tool in tools:
                services = svc.media if tool.tool_id == "media_v2" else None
                svc.catalog.add(tool, self.tools_sup.get(f"tool:{tool.tool_id}"), services)
            svc.catalog.listeners.append(svc.sessions.signal)
            task_status.started(self.tools_sup)

    def make_gate_chain(self) -> GateChain:
        s, svc = self.settings, self.services
        config = GateChainConfig(
            tool_timeout_s=s.tool_timeout_s,
            tool_timeout_max_s=s.tool_timeout_max_s,
            max_in_flight=s.max_concurrent_calls_per_principal,
            rate_per_s=s.rate_limit_per_principal_per_s,
            burst=s.rate_limit_burst,
        )
        return GateChain(svc.catalog, svc.firearms, svc.audit, config)

    async def start_services(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        svc, s = self.services, self.settings
        assert self.root is not None
        svc.keys = KeyService(svc.store)
        svc.authenticator = Authenticator(svc.keys, trust_headers=s.trust_identity_headers,
                                          oauth=JwtVerifier.from_settings(s))
        svc.gateway = Gateway(
            catalog=svc.catalog,
            firearms=svc.firearms,
            gate_chain=self.root.get("gate_chain"),
            audit=svc.audit,
            unauthorized_tools=s.unauthorized_tools,
            tool_timeout_max_s=s.tool_timeout_max_s,
        )
        svc.drafts = DraftService(svc.store)
        svc.kpi = KpiService(svc.store)
        tools_api.install(svc.gateway)
        wire(svc)
        task_status.started(svc)

    # -- running --------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(
        self, front: actors.ChildSpec | None = None, *, front_first: bool = False
    ) -> AsyncIterator[Services]:
        """Open the store, start the tree; on exit stop it in reverse order.

        ``front_first`` starts the front end before everything else (stdio: answer the
        client's handshake while the rest starts; its handlers wait for ``ready``)."""
        url = self.settings.resolved_store_url()
        async with _event_loop_for(url), open_store(url, **options_for(self.settings)) as storage:
            self.services.storage = storage
            self.services.audit = storage.audit
            self.root = actors.Supervisor(
                "northstar", self.children(front, front_first=front_first), max_restarts=5, period=30.0
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(self.root.run)
                self.ready.set()
                try:
                    yield self.services
                finally:
                    tools_api.uninstall()
                    with trio.CancelScope(shield=True), trio.move_on_after(self.settings.shutdown_grace_s + 5):
                        await self.root.stop()
                    nursery.cancel_scope.cancel()


# A subsystem may restart 5 times in 30 s; past that it is down for 1 s, then 2, 4 ... 30 s
# between attempts, while the rest of the gateway serves (and answers 503 for it).
SUBSYSTEM_RESTARTS, SUBSYSTEM_PERIOD_S = 5, 30.0
SUBSYSTEM_BACKOFF = actors.Backoff(initial=1.0, factor=2.0, maximum=30.0)


def subsystem(spec: actors.ChildSpec) -> actors.ChildSpec:
    return actors.contained(spec, max_restarts=SUBSYSTEM_RESTARTS, period=SUBSYSTEM_PERIOD_S,
                            backoff=SUBSYSTEM_BACKOFF)


# Tools whose handlers never wait serve one message at a time: no task per call.
SERIAL_TOOLS = frozenset({"echo"})


def _tool_factory(tool: Any) -> Any:
    concurrency = 1 if tool.tool_id in SERIAL_TOOLS else 64
    return lambda: ToolActor(tool, max_concurrency=concurrency)


@contextlib.asynccontextmanager
async def _event_loop_for(url: str) -> AsyncIterator[None]:
    """PostgreSQL runs asyncpg through trio-asyncio: open its loop around everything."""
    if url.startswith(("postgres://", "postgresql://")):
        import trio_asyncio

        async with trio_asyncio.open_loop():
            yield
    else:
        yield
