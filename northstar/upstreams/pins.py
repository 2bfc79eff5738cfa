"""Pins (pure): what an upstream tool definition is, its content hash, and drift against a pin set.

An upstream's ``tools/list`` entry is reduced to its *definition*: ``name``, ``title``,
``description``, ``inputSchema``, ``outputSchema`` and ``annotations`` (wire names;
``_meta`` and ``icons`` are presentation and are left out). Its pin is the SHA-256 of the
canonical JSON of that definition (the store's :func:`~northstar.storage.core.canonical_json`:
sorted keys, no whitespace, UTF-8 kept), so key order never changes a pin and any content
byte does.

:func:`drift` compares the current pins of an upstream with an approved pin set and names
the tools that changed, disappeared or appeared. :func:`lint_tools` runs the workbench's
publish-time lint (hidden Unicode, injected instructions) over every text of a definition
a model will read, schema descriptions included (tool poisoning hides there too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from northstar.common.text_lint import lint_text
from northstar.storage.core import canonical_json

DEFINITION_KEYS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
MAX_TOOL_NAME = 128
MAX_TOOLS = 1000

Problem = dict[str, str]


@dataclass(frozen=True, slots=True)
class UpstreamTool:
    """One tool an upstream lists: its definition (wire form) and its pin."""

    name: str
    definition: dict[str, Any] = field(compare=False)
    pin: str

    @property
    def description(self) -> str | None:
        value = self.definition.get("description")
        return value if isinstance(value, str) else None

    @property
    def title(self) -> str | None:
        value = self.definition.get("title")
        if isinstance(value, str):
            return value
        annotated = self.annotations.get("title")
        return annotated if isinstance(annotated, str) else None

    @property
    def input_schema(self) -> dict[str, Any]:
        value = self.definition.get("inputSchema")
        return value if isinstance(value, dict) else {"type": "object"}

    @property
    def output_schema(self) -> dict[str, Any] | None:
        value = self.definition.get("outputSchema")
        return value if isinstance(value, dict) else None

    @property
    def annotations(self) -> dict[str, Any]:
        value = self.definition.get("annotations")
        return value if isinstance(value, dict) else {}

    def hint(self, key: str, default: bool) -> bool:
        """An annotation hint (``readOnlyHint``, ...), with the MCP default when absent."""
        value = self.annotations.get(key)
        return value if isinstance(value, bool) else default

    @property
    def read_only(self) -> bool:
        return self.hint("readOnlyHint", False)

    @property
    def destructive(self) -> bool:
        # MCP: destructiveHint defaults to true, and is meaningful only when not read-only.
        return not self.read_only and self.hint("destructiveHint", True)

    @property
    def idempotent(self) -> bool:
        return self.hint("idempotentHint", False)

    @property
    def open_world(self) -> bool:
        return self.hint("openWorldHint", True)


def definition_of(wire_tool: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned part of a ``tools/list`` entry (wire form)."""
    return {key: wire_tool[key] for key in DEFINITION_KEYS if key in wire_tool and wire_tool[key] is not None}


def pin_of(definition: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a tool definition."""
    return hashlib.sha256(canonical_json(dict(definition)).encode("utf-8")).hexdigest()


def make_tool(wire_tool: Mapping[str, Any]) -> UpstreamTool:
    definition = definition_of(wire_tool)
    return UpstreamTool(name=str(definition["name"]), definition=definition, pin=pin_of(definition))


def check_listing(wire_tools: Sequence[Mapping[str, Any]]) -> tuple[dict[str, UpstreamTool], list[Problem]]:
    """The usable tools of a listing by name, and the problems of the rest (skipped).

    Skipped: names that are empty, longer than 128 characters or hold control characters,
    duplicates (the first one wins), definitions that cannot be pinned, anything past 1000 tools.
    """
    tools: dict[str, UpstreamTool] = {}
    problems: list[Problem] = []
    for n, wire in enumerate(wire_tools):
        name = wire.get("name")
        where = f"/tools/{n}"
        if n >= MAX_TOOLS:
            problems.append({"path": where, "message": f"more than {MAX_TOOLS} tools: the rest is ignored"})
            break
        if not isinstance(name, str) or not 0 < len(name) <= MAX_TOOL_NAME or any(ord(c) < 32 for c in name):
            problems.append({"path": where, "message": "tool name must be 1-128 characters without control ones"})
        elif name in tools:
            problems.append({"path": where, "message": f"tool {name!r} is listed twice; the first one is used"})
        else:
            try:
                tools[name] = make_tool(wire)
            except (TypeError, ValueError):
                problems.append({"path": where, "message": f"tool {name!r} has a definition that is not JSON"})
    return tools, problems


def pins_of(tools: Mapping[str, UpstreamTool]) -> dict[str, str]:
    return {name: tool.pin for name, tool in sorted(tools.items())}


@dataclass(frozen=True, slots=True)
class Drift:
    """How an upstream's tools differ from an approved pin set (names, sorted)."""

    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.changed or self.removed or self.added)

    def to_dict(self) -> dict[str, list[str]]:
        return {"changed": list(self.changed), "removed": list(self.removed), "added": list(self.added)}


def drift(approved: Mapping[str, str], current: Mapping[str, str]) -> Drift:
    """Tools whose pin changed, that are gone, or that are new, relative to ``approved``."""
    return Drift(
        changed=tuple(sorted(n for n, pin in approved.items() if n in current and current[n] != pin)),
        removed=tuple(sorted(n for n in approved if n not in current)),
        added=tuple(sorted(n for n in current if n not in approved)),
    )


# --------------------------------------------------------------------------- lint


def _schema_texts(schema: Any, at: str) -> Iterator[tuple[str, str]]:
    """Every ``title`` / ``description`` string inside a JSON Schema (and its enum strings)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            where = f"{at}/{key}"
            if key in ("title", "description") and isinstance(value, str):
                yield where, value
            elif key in ("enum", "const", "default", "examples"):
                yield from _strings(value, where)
            else:
                yield from _schema_texts(value, where)
    elif isinstance(schema, list):
        for n, item in enumerate(schema):
            yield from _schema_texts(item, f"{at}/{n}")


def _strings(value: Any, at: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield at, value
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _strings(item, f"{at}/{n}")


def tool_texts(tool: UpstreamTool) -> Iterator[tuple[str, str]]:
    """Every text of a tool definition a model reads, with a JSON pointer per text."""
    base = "/tools/" + tool.name.replace("~", "~0").replace("/", "~1")
    for key in ("title", "description"):
        value = tool.definition.get(key)
        if isinstance(value, str):
            yield f"{base}/{key}", value
    title = tool.annotations.get("title")
    if isinstance(title, str):
        yield f"{base}/annotations/title", title
    yield from _schema_texts(tool.definition.get("inputSchema"), f"{base}/inputSchema")
    yield from _schema_texts(tool.definition.get("outputSchema"), f"{base}/outputSchema")


def lint_tools(tools: Mapping[str, UpstreamTool]) -> list[Problem]:
    """The workbench lint over every upstream tool text (empty when all are clean)."""
    problems: list[Problem] = []
    for _name, tool in sorted(tools.items()):
        for path, text in tool_texts(tool):
            problems += lint_text(path, text)
    return problems
