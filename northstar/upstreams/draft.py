"""Draft generation (pure): an upstream's tools as a workbench draft, in one step.

The draft is the ordinary workbench format (``docs/workbench.md``) with two additions the
workbench learns when federation is integrated:

* an operation wraps an upstream tool: ``"wraps": "upstream:<name>/<tool>"`` (the upstream
  tool name verbatim, whatever its characters);
* a top-level ``"upstream": {"name", "pins": {tool: sha256}, "definitions": {tool: definition}}``
  block: the definitions the admin approves by publishing (each must hash to its pin); a
  changed definition is refused until approved again. With the definitions recorded, a
  draft (and the package published from it) is self-contained: validating, narrowing and
  publishing it needs no connection to the upstream.

Its ``tool_id`` is the upstream's name. Operations take the upstream tool names, made safe
for northstar's naming rules where needed (:func:`operation_name`): lowercase letters,
digits, ``_`` and ``-``, no ``__``, no leading or trailing ``_``/``-``, and short enough that
``<tool_id>__<operation>`` fits the 64-character wire name; collisions get ``-2``, ``-3``...

Scopes follow the annotations: read-only tools (``readOnlyHint``) go to ``<name>.read``,
the rest to ``<name>.write``, which is guarded by ``firearm.<name>.write`` from the start
(the admin may rebind or open it). Destructive tools keep ``destructive: true`` (MCP's
default when a tool does not say) and are named in the scope description. A scope holds at
most 50 operations; larger groups continue in ``<name>.read.2``, ... .
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from northstar.mcp_gateway.tools import naming
from northstar.upstreams.pins import Problem, UpstreamTool, lint_tools, pins_of

WRAPS_PREFIX = "upstream:"
MAX_OPERATION = 60  # the workbench's operation name bound
MAX_OPS_PER_SCOPE = 50
MAX_SCOPES = 20
MAX_DESCRIPTION = 4000
MAX_TITLE = 200

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_UNDERSCORES = re.compile(r"_{2,}")


def wraps_of(upstream: str, tool: str) -> str:
    return f"{WRAPS_PREFIX}{upstream}/{tool}"


def parse_wraps(wraps: str) -> tuple[str, str] | None:
    """``(upstream, tool)`` of an ``upstream:<name>/<tool>`` reference, or None."""
    if not wraps.startswith(WRAPS_PREFIX):
        return None
    upstream, sep, tool = wraps[len(WRAPS_PREFIX):].partition("/")
    if not sep or not upstream or not tool:
        return None
    return upstream, tool


def max_operation_len(tool_id: str) -> int:
    return min(MAX_OPERATION, 64 - len(tool_id) - len(naming.SEPARATOR))


def operation_name(tool: str, tool_id: str) -> str:
    """A northstar operation name for an upstream tool name (unchanged when already valid)."""
    limit = max_operation_len(tool_id)
    if _valid(tool, tool_id, limit):
        return tool
    text = _CAMEL.sub("_", tool).lower()
    text = _UNDERSCORES.sub("_", _UNSAFE.sub("_", text)).strip("_-")
    text = text[:limit].rstrip("_-") or "tool"
    return text


def _valid(name: str, tool_id: str, limit: int) -> bool:
    if len(name) > limit:
        return False
    try:
        naming.to_wire(f"{tool_id}.{name}")
    except ValueError:
        return False
    return True


def operation_names(tools: list[str], tool_id: str) -> dict[str, str]:
    """Unique operation names for upstream tool names, in a stable order (collisions: -2, -3...)."""
    limit = max_operation_len(tool_id)
    taken: set[str] = set()
    out: dict[str, str] = {}
    for tool in sorted(tools, key=lambda t: (operation_name(t, tool_id) != t, t)):  # exact names first
        base = operation_name(tool, tool_id)
        name, n = base, 1
        while name in taken:
            n += 1
            suffix = f"-{n}"
            name = base[: limit - len(suffix)].rstrip("_-") + suffix
        taken.add(name)
        out[tool] = name
    return out


@dataclass(frozen=True, slots=True)
class GeneratedDraft:
    """A generated draft spec, how tools were renamed, and what the admin should look at."""

    spec: dict[str, Any]
    pins: dict[str, str]
    renamed: dict[str, str] = field(default_factory=dict)  # upstream tool -> operation, when different
    problems: list[Problem] = field(default_factory=list)  # lint and naming findings (the publish refuses lint)


def _text(value: str | None, limit: int, fallback: str) -> str:
    text = (value or "").strip()
    return text[:limit] if text else fallback


def _operation(upstream: str, op_name: str, tool: UpstreamTool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "name": op_name,
        "description": _text(tool.description, MAX_DESCRIPTION, f"Calls {tool.name} on the upstream {upstream}."),
        "wraps": wraps_of(upstream, tool.name),
        "input": {"presets": {}, "restrict": {}, "hide": []},
        "annotations": {"read_only": tool.read_only, "destructive": tool.destructive,
                        "idempotent": tool.idempotent, "open_world": tool.open_world},
    }
    title = tool.title
    if title and title.strip():
        op["title"] = title.strip()[:MAX_TITLE]
    return op


def _scopes(upstream: str, kind: str, ops: list[tuple[dict[str, Any], UpstreamTool]]) -> list[dict[str, Any]]:
    scopes = []
    for n in range(0, len(ops), MAX_OPS_PER_SCOPE):
        chunk = ops[n:n + MAX_OPS_PER_SCOPE]
        suffix = "" if n == 0 else f".{n // MAX_OPS_PER_SCOPE + 1}"
        destructive = [tool.name for _op, tool in chunk if tool.destructive]
        if kind == "read":
            description = f"Read-only tools of the upstream MCP server {upstream}."
        else:
            description = f"Tools of the upstream MCP server {upstream} that may change things."
            if destructive:
                description += " Destructive: " + ", ".join(destructive)[:3000] + "."
        scopes.append({
            "name": f"{upstream}.{kind}{suffix}",
            "description": description,
            "firearm": None if kind == "read" else f"firearm.{upstream}.write",
            "operations": [op for op, _tool in chunk],
        })
    return scopes


def generate_draft(upstream: str, tools: Mapping[str, UpstreamTool], *, title: str | None = None,
                   description: str | None = None) -> GeneratedDraft:
    """The workbench draft spec wrapping every tool of ``upstream`` (``tools`` by upstream name)."""
    names = operation_names(list(tools), upstream)
    grouped: dict[str, list[tuple[dict[str, Any], UpstreamTool]]] = {"read": [], "write": []}
    for tool_name in sorted(tools, key=lambda t: names[t]):
        tool = tools[tool_name]
        grouped["read" if tool.read_only else "write"].append((_operation(upstream, names[tool_name], tool), tool))
    scopes = _scopes(upstream, "read", grouped["read"]) + _scopes(upstream, "write", grouped["write"])
    problems = lint_tools(tools)
    if not scopes:
        problems.append({"path": "/tools", "message": f"the upstream {upstream} lists no tools"})
    if len(scopes) > MAX_SCOPES:
        problems.append({"path": "/scopes", "message": f"{len(scopes)} scopes: a tool may have at most {MAX_SCOPES}; "
                                                       "narrow the draft before publishing"})
    spec = {
        "schema_version": 1,
        "tool_id": upstream,
        "title": _text(title, MAX_TITLE, upstream),
        "description": _text(description, MAX_DESCRIPTION, f"Tools of the upstream MCP server {upstream}."),
        "scopes": scopes,
        "kpis": [],
        "upstream": {"name": upstream, "pins": pins_of(tools),
                     "definitions": {name: tool.definition for name, tool in sorted(tools.items())}},
    }
    renamed = {tool: op for tool, op in sorted(names.items()) if tool != op}
    return GeneratedDraft(spec=spec, pins=pins_of(tools), renamed=renamed, problems=problems)
