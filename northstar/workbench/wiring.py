"""How the workbench plugs into the runtime: its supervision-tree children and ``wire``.

The runtime-facing surface is two functions:

``workbench_children(runtime)``
    The children to insert into the root supervisor after ``services`` (they need the
    store, catalogue, firearms, drafts and KPI services it creates), in start order::

        workbench.drafts     DraftStoreActor: drafts by messages
        workbench.publisher  Publisher actor: publish / rollback / unpublish, one at a time
        workbench.registry   RegistryWatcher: loads active overlays, follows changes (0.5 s)

    Published tool actors themselves run as dynamic children of the runtime's ``tools``
    supervisor (see :class:`~northstar.workbench.publisher.live.ToolHost`).

``wire(services)``
    Sets ``services.metrics`` (and ``gateway.on_result = metrics.record``),
    ``services.sandbox``, ``services.publisher`` and installs :func:`validate_spec` as the
    DraftService ``validate`` hook. Idempotent; the first workbench child calls it too.
"""

from __future__ import annotations

from typing import Any

import trio

import actors
from northstar.kpi.measure import Metrics
from northstar.workbench.definition import validate_spec
from northstar.workbench.publisher.actor import DraftStoreActor, DraftStoreClient, Publisher, PublisherClient
from northstar.workbench.publisher.live import LiveTools, ToolHost
from northstar.workbench.publisher.service import PublisherService
from northstar.workbench.publisher.watcher import RegistryWatcher
from northstar.workbench.registry import ComponentRegistry, OverlayStore
from northstar.workbench.sandbox import runner as sandbox_runner

EXTRAS_KEY = "workbench"
DRAFTS_ID = "workbench.drafts"
PUBLISHER_ID = "workbench.publisher"
REGISTRY_ID = "workbench.registry"


def draft_validator(services: Any) -> Any:
    """The DraftService hook: a spec must validate against the live catalogue (422 otherwise)."""

    def validate(spec: dict[str, Any]) -> dict[str, Any]:
        firearms = services.firearms
        validate_spec(spec, services.catalog, bindings=firearms.bindings() if firearms is not None else None)
        return spec

    return validate


class Workbench:
    """The workbench's share of a runtime: its children and the objects they share."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.services = runtime.services
        self.host = ToolHost(lambda: runtime.tools_sup)
        self._service: PublisherService | None = None
        self._live: LiveTools | None = None
        self.watcher: RegistryWatcher | None = None

    def _ref(self, child_id: str) -> Any:
        root = self.runtime.root
        if root is None:
            raise KeyError(child_id)
        return root.get(child_id)

    @property
    def live(self) -> LiveTools:
        if self._live is None:
            svc = self.services
            self._live = LiveTools(svc.catalog, self.host, svc.firearms, svc.media)
        return self._live

    @property
    def service(self) -> PublisherService:
        if self._service is None:
            svc = self.services
            self._service = PublisherService(
                drafts=DraftStoreClient(lambda: self._ref(DRAFTS_ID)),
                registry=ComponentRegistry(svc.store),
                overlays=OverlayStore(svc.store),
                catalog=svc.catalog,
                firearms=svc.firearms,
                kpi=svc.kpi,
                audit=svc.audit,
                live=self.live,
            )
        return self._service

    def client(self) -> PublisherClient:
        return PublisherClient(lambda: self._ref(PUBLISHER_ID), self.service)

    def children(self) -> list[actors.ChildSpec]:
        return [
            actors.actor_child(DRAFTS_ID, self._make_drafts, capacity=256),
            actors.actor_child(PUBLISHER_ID, self._make_publisher, capacity=64, shutdown_timeout=30.0),
            actors.ChildSpec(REGISTRY_ID, self._run_watcher),
        ]

    def _make_drafts(self) -> DraftStoreActor:
        wire(self.services)
        return DraftStoreActor(self.services.drafts)

    def _make_publisher(self) -> Publisher:
        return Publisher(self.service)

    async def _run_watcher(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.watcher = RegistryWatcher(self.services.store, self.live)
        await self.watcher.run(task_status=task_status)


def workbench_children(runtime: Any) -> list[actors.ChildSpec]:
    """The workbench children for the root supervisor (insert them after ``services``)."""
    workbench = Workbench(runtime)
    runtime.services.extras[EXTRAS_KEY] = workbench
    return workbench.children()


def wire(services: Any) -> None:
    """Install metrics, the sandbox, the publisher client and the draft validator."""
    metrics = services.metrics if isinstance(services.metrics, Metrics) else Metrics()
    metrics.audit = services.audit
    services.metrics = metrics
    if services.gateway is not None:
        services.gateway.on_result = metrics.record
    workbench = services.extras.get(EXTRAS_KEY)
    if isinstance(workbench, Workbench):
        runtime = workbench.runtime
        metrics.supervisors = [lambda: runtime.root, lambda: runtime.tools_sup]
        services.publisher = workbench.client()
    services.sandbox = sandbox_runner.SandboxRunner(services)
    sandbox_runner.install(services.sandbox)
    if services.drafts is not None:
        services.drafts.validate = draft_validator(services)
