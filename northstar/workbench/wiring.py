"""The workbench's part of the supervision tree, built from typed parts by the composition root.

:class:`Workbench` is built before anything runs (``northstar.runtime``), from the parts it
needs, and hands back its children and the clients the doors use::

    workbench.drafts     DraftStoreActor: drafts by messages
    workbench.publisher  Publisher actor: publish / rollback / unpublish, one at a time
    workbench.registry   RegistryWatcher: loads active overlays, follows changes (0.5 s)

Published tool actors themselves run as dynamic children of the runtime's ``tools``
supervisor (see :class:`~northstar.workbench.publisher.live.ToolHost`). The actors' refs are
known from their specs (:func:`actors.ref_of`), so the clients are wired before the tree runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

import actors
from northstar.kpi.service import KpiService
from northstar.mcp_gateway.tools.catalog import Catalog
from northstar.mcp_gateway.tools.media_v2 import MediaServices
from northstar.policy.firearms import FirearmsService
from northstar.storage.base import AuditLog, VersionedStore
from northstar.storage.changes import ChangeBell
from northstar.workbench.definition import validate_spec
from northstar.workbench.drafts.service import DraftService
from northstar.workbench.publisher.actor import DraftStoreActor, DraftStoreClient, Publisher, PublisherClient
from northstar.workbench.publisher.live import LiveTools, ToolHost
from northstar.workbench.publisher.service import PublisherService
from northstar.workbench.publisher.watcher import RegistryWatcher
from northstar.workbench.registry import ComponentRegistry, OverlayStore

DRAFTS_ID = "workbench.drafts"
PUBLISHER_ID = "workbench.publisher"
REGISTRY_ID = "workbench.registry"


def draft_validator(catalog: Catalog, firearms: FirearmsService | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The DraftService hook: a spec must validate against the live catalogue (422 otherwise),
    and, given the firearms service, against the live firearm bindings."""

    def validate(spec: dict[str, Any]) -> dict[str, Any]:
        validate_spec(spec, catalog, bindings=firearms.bindings() if firearms is not None else None)
        return spec

    return validate


@dataclass(frozen=True, slots=True)
class WorkbenchParts:
    """What the workbench is built from (each made by the composition root)."""

    store: VersionedStore
    audit: AuditLog
    catalog: Catalog
    firearms: FirearmsService
    media: MediaServices
    kpi: KpiService
    drafts: DraftService
    tools_supervisor: Callable[[], actors.Supervisor | None]
    upstreams: Any = None  # the UpstreamHub (federation), when the gateway runs one
    changes: ChangeBell | None = None  # the store's change bell (another replica's saves)


class Workbench:
    """The workbench's children and the clients of its actors, wired before the tree runs."""

    def __init__(self, parts: WorkbenchParts) -> None:
        self.parts = parts
        self.live = LiveTools(parts.catalog, ToolHost(parts.tools_supervisor), parts.firearms, parts.media,
                              parts.upstreams)
        self._drafts_spec = actors.actor_child(DRAFTS_ID, lambda: DraftStoreActor(parts.drafts), capacity=256)
        self._publisher_spec = actors.actor_child(PUBLISHER_ID, lambda: Publisher(self.service), capacity=64,
                                                  shutdown_timeout=30.0)
        self.service = PublisherService(
            drafts=DraftStoreClient(actors.ref_of(self._drafts_spec)),
            registry=ComponentRegistry(parts.store),
            overlays=OverlayStore(parts.store),
            catalog=parts.catalog,
            firearms=parts.firearms,
            kpi=parts.kpi,
            audit=parts.audit,
            live=self.live,
            upstreams=parts.upstreams,
        )
        self.publisher = PublisherClient(actors.ref_of(self._publisher_spec), self.service)
        self.watcher: RegistryWatcher | None = None

    def children(self) -> list[actors.ChildSpec]:
        """In start order: drafts, publisher, the registry watcher (which loads what is live)."""
        return [self._drafts_spec, self._publisher_spec, actors.ChildSpec(REGISTRY_ID, self._run_watcher)]

    async def _run_watcher(self, *, task_status: trio.TaskStatus[RegistryWatcher] = trio.TASK_STATUS_IGNORED) -> None:
        # A fresh cursor on every (re)start.
        self.watcher = RegistryWatcher(self.parts.store, self.live, changes=self.parts.changes)
        await self.watcher.run(task_status=task_status)
