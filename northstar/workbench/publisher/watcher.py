"""Replicas: follow the activation overlays in the store and keep the catalogue in step.

:class:`RegistryWatcher` loads every active overlay when it starts, then polls
``store.changes_since(cursor, ["activation_overlays"])`` when the store's change bell rings
(PostgreSQL NOTIFY from another replica's save) and at least every ``interval_s`` (0.5 s), and
(re)loads each tool whose overlay changed: with PostgreSQL, publishing through one gateway
makes the tool live on every other within milliseconds, and within the interval when
notifications are lost. It always applies the *current*
overlay of a tool (never a stale intermediate one), so applying the same change twice (the
local publisher already did) is a no-op. A tool that cannot be activated yet (its firearm
binding not visible, the store briefly unavailable) is retried on the next poll; one whose
package no longer verifies is logged and left out.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from northstar.common import errors as E
from northstar.storage.changes import ChangeBell
from northstar.storage.kinds import ACTIVATION_OVERLAYS
from northstar.workbench.publisher.live import LiveTools
from northstar.workbench.registry import ComponentRegistry, OverlayStore

log = logging.getLogger("northstar.workbench.watcher")
POLL_INTERVAL_S = 0.5
_KINDS = [ACTIVATION_OVERLAYS]


class RegistryWatcher:
    def __init__(self, store: Any, live: LiveTools, *, interval_s: float = POLL_INTERVAL_S,
                 changes: ChangeBell | None = None) -> None:
        self.store = store
        self.changes = changes or ChangeBell()
        self.live = live
        self.registry = ComponentRegistry(store)
        self.overlays = OverlayStore(store)
        self.interval_s = interval_s
        self.cursor = 0
        self.retry: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[RegistryWatcher] = trio.TASK_STATUS_IGNORED) -> None:
        await self.load_all()
        task_status.started(self)
        with self.changes.subscribe(_KINDS) as sub:
            while True:
                await sub.wait(self.interval_s)  # another replica's publish rings at once
                await self.poll_once()

    async def load_all(self) -> None:
        """Apply the current overlay of every tool ever published (start, or after a host restart)."""
        await self.live.reset()
        tool_ids, self.cursor = await self._changed(0)
        for tool_id in sorted(tool_ids):
            await self.apply(tool_id)

    async def poll_once(self) -> None:
        try:
            if self.live.stale():
                await self.load_all()
                return
            tool_ids, self.cursor = await self._changed(self.cursor)
        except E.ServiceUnavailable:
            log.warning("registry poll failed; retrying")
            return
        for tool_id in sorted(tool_ids | self.retry):
            await self.apply(tool_id)

    async def _changed(self, cursor: int) -> tuple[set[str], int]:
        tool_ids: set[str] = set()
        while True:
            batch = await self.store.changes_since(cursor, _KINDS)
            if not batch:
                return tool_ids, cursor
            tool_ids.update(ev.resource_id for ev in batch)
            cursor = batch[-1].change_id

    async def apply(self, tool_id: str) -> None:
        self.retry.discard(tool_id)
        try:
            rec = await self.overlays.current(tool_id)
            data = rec.data if rec is not None else None
            if rec is None or not data or not data.get("active"):
                await self.live.deactivate(tool_id, rec.version if rec is not None else None)
                return
            package = await self.registry.get(tool_id, data["package_version"])
            await self.live.activate(package, data, rec.version)
        except E.ServiceUnavailable:
            self.retry.add(tool_id)
        except E.NorthstarError as err:
            log.error("published tool not loaded", extra={"tool": tool_id, "code": err.code, "reason": err.message})
