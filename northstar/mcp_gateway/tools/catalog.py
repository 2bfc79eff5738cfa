"""The live tool catalogue: which tools exist, their actors and their services.

Built-in tools are added at start-up; the publisher adds, replaces and removes published
ones at run time. Every change bumps :attr:`Catalog.version` and tells the listeners (the
transports turn that into ``notifications/tools/list_changed``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from northstar.mcp_gateway.tools import naming
from northstar.mcp_gateway.tools.model import Operation, Scope, ToolDefinition

log = logging.getLogger("northstar.catalog")


@dataclass(frozen=True, slots=True)
class Resolved:
    tool: ToolDefinition
    scope: Scope
    op: Operation
    ref: Any
    services: Any

    @property
    def canonical(self) -> str:
        return f"{self.tool.tool_id}.{self.op.name}"


@dataclass(frozen=True, slots=True)
class Entry:
    tool: ToolDefinition
    ref: Any
    services: Any


class Catalog:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._index: dict[str, tuple[str, str]] = {}
        self.version = 0
        self.listeners: list[Callable[[], None]] = []

    def add(self, tool: ToolDefinition, ref: Any, services: Any = None) -> None:
        self._entries[tool.tool_id] = Entry(tool, ref, services)
        self._reindex()

    def remove(self, tool_id: str) -> Entry | None:
        entry = self._entries.pop(tool_id, None)
        if entry is not None:
            self._reindex()
        return entry

    def _reindex(self) -> None:
        index: dict[str, tuple[str, str]] = {}
        for tool_id, entry in self._entries.items():
            for _scope, op in entry.tool.operations():
                canonical = f"{tool_id}.{op.name}"
                index[canonical] = (tool_id, op.name)
                index[naming.to_wire(canonical)] = (tool_id, op.name)
        self._index = index
        self.version += 1
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:
                log.exception("catalog listener failed")

    def get(self, tool_id: str) -> Entry | None:
        return self._entries.get(tool_id)

    def tools(self) -> list[ToolDefinition]:
        return [e.tool for e in self._entries.values()]

    def resolve(self, name: str) -> Resolved | None:
        key = self._index.get(name) or self._index.get(naming.to_canonical(name))
        if key is None:
            return None
        entry = self._entries[key[0]]
        found = entry.tool.find(key[1])
        if found is None:
            return None
        return Resolved(entry.tool, found[0], found[1], entry.ref, entry.services)
