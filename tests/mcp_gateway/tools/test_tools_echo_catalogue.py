"""echo behaviour, and the built-in catalogue as schema_gen and naming see it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from northstar.mcp_gateway import schema_gen
from northstar.mcp_gateway.tools import naming
from northstar.mcp_gateway.tools.builtin import DEFAULT_FIREARM_BINDINGS, builtin_tools
from northstar.mcp_gateway.tools.echo import ECHO, MAX_MESSAGE_CHARS, PingInput, PingOutput
from tests.mcp_gateway.tools.tools_testkit import call, tool_ctx

WIRE = naming.WIRE_NAME


async def test_ping_defaults() -> None:
    before = datetime.now(UTC)
    out = await call(ECHO, tool_ctx(), "ping")
    assert isinstance(out, PingOutput)
    assert (out.pong, out.message, out.data) == (True, "ping", None)
    received = datetime.fromisoformat(out.received_at)
    assert received.utcoffset() == timedelta(0)
    assert out.received_at.endswith("Z")
    assert before.replace(microsecond=0) <= received <= datetime.now(UTC)


async def test_echo_returns_what_it_was_sent() -> None:
    data = {"nested": {"list": [1, 2.5, None, True, "x"]}, "unicode": "héllo ✓"}
    out = await call(ECHO, tool_ctx(), "ping", message="hello there", data=data)
    assert out.message == "hello there"
    assert out.data == data


async def test_message_at_the_limit_is_echoed() -> None:
    text = "x" * MAX_MESSAGE_CHARS
    out = await call(ECHO, tool_ctx(), "ping", message=text)
    assert out.message == text


@pytest.mark.parametrize(
    "arguments",
    [
        {"message": "x" * (MAX_MESSAGE_CHARS + 1)},
        {"message": 42},
        {"data": [1, 2]},
        {"unexpected": 1},
    ],
)
def test_ping_input_is_validated(arguments: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PingInput.model_validate(arguments)


def test_echo_definition() -> None:
    assert ECHO.tool_id == "echo" and ECHO.version == "1.0.0" and ECHO.title and ECHO.description
    [(scope, op)] = list(ECHO.operations())
    assert (scope.name, op.name) == ("utility", "ping")
    assert op.annotations.read_only and op.annotations.idempotent and not op.annotations.destructive


def test_builtin_tools_and_bindings() -> None:
    tools = builtin_tools()
    assert [t.tool_id for t in tools] == ["echo", "media_v2"]
    assert all(t.builtin for t in tools)
    assert DEFAULT_FIREARM_BINDINGS == {"media.write": "firearm.media.write"}
    media = tools[1]
    assert media.version == "2.0.0"
    assert {s.name: [o.name for o in s.operations] for s in media.scopes} == {
        "media.read": ["get_asset", "list_assets"],
        "media.write": ["create_asset", "delete_asset"],
    }


def test_wire_names_are_valid_and_reversible() -> None:
    for tool in builtin_tools():
        for _, op in tool.operations():
            canonical = f"{tool.tool_id}.{op.name}"
            wire = naming.to_wire(canonical)
            assert WIRE.fullmatch(wire), wire
            assert naming.to_canonical(wire) == canonical


def test_every_operation_has_object_schemas() -> None:
    inventory = schema_gen.inventory(builtin_tools(), DEFAULT_FIREARM_BINDINGS)
    entries = [op for tool in inventory for scope in tool["scopes"] for op in scope["operations"]]
    assert len(entries) == 5
    for entry in entries:
        assert entry["inputSchema"]["type"] == "object", entry["name"]
        assert entry["outputSchema"]["type"] == "object", entry["name"]
        assert WIRE.fullmatch(entry["wire_name"])
    firearms = {s["name"]: s["firearm"] for t in inventory for s in t["scopes"]}
    assert firearms == {"utility": None, "media.read": None, "media.write": "firearm.media.write"}


def test_mcp_tool_list_annotations() -> None:
    listed = {t["name"]: t for t in schema_gen.mcp_tools(builtin_tools(), DEFAULT_FIREARM_BINDINGS)}
    assert set(listed) == {
        "echo__ping",
        "media_v2__get_asset",
        "media_v2__list_assets",
        "media_v2__create_asset",
        "media_v2__delete_asset",
    }
    assert listed["media_v2__get_asset"]["annotations"]["readOnlyHint"] is True
    assert listed["media_v2__list_assets"]["annotations"]["idempotentHint"] is True
    assert listed["media_v2__delete_asset"]["annotations"]["destructiveHint"] is True
    assert listed["media_v2__create_asset"]["annotations"]["readOnlyHint"] is False
    create_schema = listed["media_v2__create_asset"]["inputSchema"]
    assert set(create_schema["required"]) == {"name", "mime_type"}
