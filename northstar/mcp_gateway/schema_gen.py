"""Derive the inventory and the MCP discovery response from tool definitions.

JSON Schemas (dialect 2020-12, the MCP default, so no ``$schema`` key is emitted) come from
the operations' pydantic models; nothing is written by hand. Both views are pure functions
of the definitions and the firearm bindings, and the schemas are cached per operation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Any, Literal

from pydantic import BaseModel

from northstar.mcp_gateway.tools import naming
from northstar.mcp_gateway.tools.model import Operation, Scope, ToolDefinition

META_PREFIX = "northstar/"
_schema_cache: dict[tuple[str, type[BaseModel]], dict[str, Any]] = {}


def _schema(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
    cached = _schema_cache.get((mode, model))
    if cached is None:
        cached = dict(model.model_json_schema(mode=mode))
        cached.setdefault("type", "object")
        _schema_cache[(mode, model)] = cached
    return cached


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's input JSON Schema (2020-12), computed once per model class."""
    return _schema(model, "validation")


def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's output JSON Schema, as its results are serialised."""
    return _schema(model, "serialization")


def input_schema(op: Operation) -> dict[str, Any]:
    if op.upstream is not None:
        return op.upstream.input_schema
    return op.input_schema_override if op.input_schema_override is not None else model_schema(op.input_model)


def wrapped_input_schema(op: Operation) -> dict[str, Any]:
    """The full input schema of an operation that may be wrapped (before any narrowing)."""
    if op.upstream is not None:
        return op.upstream.input_schema
    return model_schema(op.input_model)


def op_output_schema(op: Operation) -> dict[str, Any] | None:
    """The output schema shown for an operation (an upstream tool may declare none)."""
    if op.upstream is not None:
        return op.upstream.output_schema
    return output_schema(op.output_model)


def _with_output(entry: dict[str, Any], op: Operation) -> dict[str, Any]:
    schema = op_output_schema(op)
    if schema is not None:
        entry["outputSchema"] = schema
    return entry


def canonical_name(tool: ToolDefinition, op: Operation) -> str:
    return f"{tool.tool_id}.{op.name}"


def operation_entry(tool: ToolDefinition, scope: Scope, op: Operation) -> dict[str, Any]:
    canonical = canonical_name(tool, op)
    entry = {
        "name": canonical,
        "wire_name": naming.to_wire(canonical),
        "operation": op.name,
        "title": op.title,
        "description": op.description,
        "inputSchema": input_schema(op),
        "outputSchema": op_output_schema(op),
        "annotations": op.annotations.to_mcp(op.title),
    }
    if op.upstream is not None:
        entry["upstream"] = {"name": op.upstream.upstream, "tool": op.upstream.tool, "pin": op.upstream.pin}
    return entry


def inventory_entry(tool: ToolDefinition, bindings: Mapping[str, str]) -> dict[str, Any]:
    """One tool in ``GET /v1/tools``: its scopes, their firearm and operations."""
    return {
        "tool_id": tool.tool_id,
        "title": tool.title,
        "description": tool.description,
        "version": tool.version,
        "builtin": tool.builtin,
        "package_hash": tool.package_hash,
        "scopes": [
            {
                "name": scope.name,
                "description": scope.description,
                "firearm": bindings.get(scope.name),
                "operations": [operation_entry(tool, scope, op) for op in scope.operations],
            }
            for scope in tool.scopes
        ],
    }


def inventory(tools: Iterable[ToolDefinition], bindings: Mapping[str, str]) -> list[dict[str, Any]]:
    return [inventory_entry(t, bindings) for t in tools]


def mcp_tool(
    tool: ToolDefinition, scope: Scope, op: Operation, firearm: str | None, *, callable_: bool = True
) -> dict[str, Any]:
    """One MCP ``Tool`` object (wire form, camelCase) for an operation."""
    canonical = canonical_name(tool, op)
    meta: dict[str, Any] = {
        f"{META_PREFIX}tool_id": tool.tool_id,
        f"{META_PREFIX}scope": scope.name,
        f"{META_PREFIX}canonical_name": canonical,
        f"{META_PREFIX}version": tool.version,
        f"{META_PREFIX}firearm": firearm,
    }
    if tool.package_hash:
        meta[f"{META_PREFIX}package_hash"] = tool.package_hash
    description = op.description
    if not callable_:
        meta[f"{META_PREFIX}callable"] = False
        description = f"{description} [requires firearm {firearm}; not granted to you]"
    if op.upstream is not None:
        meta[f"{META_PREFIX}upstream"] = op.upstream.upstream
    return _with_output({
        "name": naming.to_wire(canonical),
        "title": op.title or canonical,
        "description": description,
        "inputSchema": input_schema(op),
        "annotations": op.annotations.to_mcp(op.title),
        "_meta": meta,
    }, op)


def mcp_tools(
    tools: Iterable[ToolDefinition],
    bindings: Mapping[str, str],
    *,
    granted: Set[str] | None = None,
    unauthorized: str = "show",
) -> list[dict[str, Any]]:
    """The ``tools/list`` result: one MCP tool per operation.

    ``granted`` is the caller's firearms (``None``: do not judge); ``unauthorized`` says what
    to do with operations the caller may not call: ``show``, ``mark`` or ``hide``.
    """
    out = []
    for tool in tools:
        for scope, op in tool.operations():
            firearm = bindings.get(scope.name)
            allowed = firearm is None or granted is None or firearm in granted
            if not allowed and unauthorized == "hide":
                continue
            out.append(mcp_tool(tool, scope, op, firearm, callable_=allowed or unauthorized == "show"))
    return out
