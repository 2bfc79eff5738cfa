"""A multi-scope tool definition converts to the correct inventory and MCP discovery."""

from __future__ import annotations

import re
from typing import Any

import mcp_types as types
from pydantic import BaseModel, Field

from northstar.mcp_gateway import schema_gen
from northstar.mcp_gateway.tools import naming
from northstar.mcp_gateway.tools.model import Annotations, Operation, Scope, ToolDefinition


class ReadIn(BaseModel):
    key: str = Field(min_length=1)


class ReadOut(BaseModel):
    value: str | None


class WriteIn(BaseModel):
    key: str
    value: str = Field(max_length=10)


class WriteOut(BaseModel):
    version: int


async def handler(tctx: Any, inputs: Any) -> Any:
    raise AssertionError("not called")


KV = ToolDefinition(
    tool_id="kv_store",
    title="Key-value",
    description="A key-value store",
    version="3.1.0",
    scopes=(
        Scope("kv.read", "Read", (Operation("get", "Get a value", ReadIn, ReadOut, handler,
                                            Annotations(read_only=True, idempotent=True), title="Get"),)),
        Scope("kv.write", "Write", (
            Operation("put", "Put a value", WriteIn, WriteOut, handler, Annotations(idempotent=True)),
            Operation("drop", "Drop a value", ReadIn, WriteOut, handler, Annotations(destructive=True)),
        )),
    ),
)
BINDINGS = {"kv.write": "firearm.kv.write"}


def test_inventory_lists_scopes_operations_schemas_and_firearms() -> None:
    [entry] = schema_gen.inventory([KV], BINDINGS)
    assert entry["tool_id"] == "kv_store" and entry["version"] == "3.1.0"
    assert [s["name"] for s in entry["scopes"]] == ["kv.read", "kv.write"]
    read, write = entry["scopes"]
    assert read["firearm"] is None and write["firearm"] == "firearm.kv.write"
    assert [op["name"] for op in write["operations"]] == ["kv_store.put", "kv_store.drop"]
    put = write["operations"][0]
    assert put["wire_name"] == "kv_store__put"
    assert put["inputSchema"]["properties"]["value"]["maxLength"] == 10
    assert put["inputSchema"]["required"] == ["key", "value"]
    assert put["outputSchema"]["properties"]["version"]["type"] == "integer"
    assert write["operations"][1]["annotations"]["destructiveHint"] is True
    assert read["operations"][0]["annotations"] == {
        "readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False,
        "title": "Get",
    }


def test_mcp_discovery_has_one_tool_per_operation_with_meta() -> None:
    tools = schema_gen.mcp_tools([KV], BINDINGS)
    assert [t["name"] for t in tools] == ["kv_store__get", "kv_store__put", "kv_store__drop"]
    for tool in tools:
        assert re.fullmatch(r"^[a-zA-Z0-9_-]{1,64}$", tool["name"])
        types.Tool.model_validate(tool)  # the SDK accepts it as an MCP Tool
    put = tools[1]
    assert put["_meta"] == {
        "northstar/tool_id": "kv_store", "northstar/scope": "kv.write",
        "northstar/canonical_name": "kv_store.put", "northstar/version": "3.1.0",
        "northstar/firearm": "firearm.kv.write",
    }
    assert put["inputSchema"] == schema_gen.model_schema(WriteIn)
    assert put["outputSchema"] == schema_gen.output_schema(WriteOut)


def test_operations_the_caller_may_not_call_are_marked_hidden_or_shown() -> None:
    marked = schema_gen.mcp_tools([KV], BINDINGS, granted=frozenset(), unauthorized="mark")
    put = next(t for t in marked if t["name"] == "kv_store__put")
    assert put["_meta"]["northstar/callable"] is False
    assert "firearm.kv.write" in put["description"]
    hidden = schema_gen.mcp_tools([KV], BINDINGS, granted=frozenset(), unauthorized="hide")
    assert [t["name"] for t in hidden] == ["kv_store__get"]
    granted = schema_gen.mcp_tools([KV], BINDINGS, granted=frozenset({"firearm.kv.write"}), unauthorized="hide")
    assert len(granted) == 3 and all("northstar/callable" not in t["_meta"] for t in granted)


def test_wire_names_are_reversible_and_checked() -> None:
    for canonical in ("echo.ping", "media_v2.create_asset", "a-b.c_d"):
        wire = naming.to_wire(canonical)
        assert "." not in wire and naming.to_canonical(wire) == canonical
        assert naming.to_canonical(canonical) == canonical
    for bad in ("has__double.op", "tool.op__x", "_lead.op", "Upper.op", "t." + "x" * 70):
        try:
            naming.to_wire(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} should be refused")
