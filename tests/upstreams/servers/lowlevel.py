"""A real upstream MCP server built on the SDK's low-level ``Server`` (stdio or Streamable HTTP).

    python lowlevel.py stdio
    python lowlevel.py http [PORT] # prints the bound port on its first stdout line
    python lowlevel.py http-json [PORT]  # the same, answering JSON (json_response=True)

Tools cover what federation must handle: read-only, write, destructive, slow (progress,
cancellation), failing (``isError`` and JSON-RPC errors), rich results (image, embedded
resource, ``structuredContent``), a result that breaks its own output schema, a large one,
one that changes another tool's description on command (``tools/list_changed``), one that
exits mid-call, and ones that show what the connection carried (env, headers) as hashes.

``UPSTREAM_RECORD`` (a file path) receives one JSON line per event the server saw on the
wire: ``{"event": "cancelled", "requestId", "reason"}``, ``{"event": "call", "tool"}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.shared.exceptions import MCPError

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
STATE: dict[str, Any] = {"echo_description": "Echo the text back.", "events": []}


def record(event: dict[str, Any]) -> None:
    STATE["events"].append(event)
    path = os.environ.get("UPSTREAM_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")


def _sha(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def _tool(name: str, description: str, props: dict[str, Any] | None = None, *, output: dict[str, Any] | None = None,
          **hints: Any) -> types.Tool:
    schema = {"type": "object", "properties": props or {}}
    annotations = types.ToolAnnotations(**hints) if hints else None
    return types.Tool(name=name, description=description, input_schema=schema, output_schema=output,
                      annotations=annotations)


def tools() -> list[types.Tool]:
    return [
        _tool("echo", STATE["echo_description"], {"text": {"type": "string", "description": "What to echo."}},
              read_only_hint=True),
        _tool("add", "Add two integers.", {"a": {"type": "integer"}, "b": {"type": "integer"}},
              output={"type": "object", "properties": {"sum": {"type": "integer"}}, "required": ["sum"]},
              read_only_hint=True, idempotent_hint=True, open_world_hint=False),
        _tool("bad_output", "Claims an output schema it does not keep.",
              output={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
              read_only_hint=True),
        _tool("createNote", "Create a note.", {"text": {"type": "string"}}, read_only_hint=False,
              destructive_hint=False),
        _tool("delete_all", "Delete every note.", read_only_hint=False, destructive_hint=True),
        _tool("slow", "Take a while, reporting progress.", {"seconds": {"type": "number"}}, read_only_hint=True),
        _tool("fail", "Fail as a tool (isError).", read_only_hint=True),
        _tool("rpc_error", "Fail with a JSON-RPC error.", {"text": {"type": "string"}}, read_only_hint=True),
        _tool("media", "Return an image, an embedded resource and structured content.", read_only_hint=True),
        _tool("big", "Return a large text.", {"size": {"type": "integer"}}, read_only_hint=True),
        _tool("set_description", "Change the description of echo.", {"text": {"type": "string"}}),
        _tool("crash", "Exit in the middle of the call."),
        _tool("pid", "The server's process id.", read_only_hint=True),
        _tool("env_hash", "SHA-256 of an environment variable.", {"name": {"type": "string"}}, read_only_hint=True),
        _tool("header_hash", "SHA-256 of a request header.", {"name": {"type": "string"}}, read_only_hint=True),
        _tool("leak", "Say the secret in every channel it has.", {"name": {"type": "string"}}, read_only_hint=True),
        _tool("leak_result", "Return the secret as a result.", {"name": {"type": "string"}}, read_only_hint=True),
        _tool("events", "What the server saw on the wire so far (JSON).", read_only_hint=True),
    ]


def text(value: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=value)]


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(tools=tools())


async def slow(ctx: Any, seconds: float) -> types.CallToolResult:
    steps = 10
    try:
        for n in range(steps):
            await ctx.session.report_progress(n, steps, f"step {n}")
            await anyio.sleep(seconds / steps)
    except anyio.get_cancelled_exc_class():
        record({"event": "handler_cancelled", "tool": "slow"})
        raise
    return types.CallToolResult(content=text("done"))


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    name = params.name
    if name == "events":
        return types.CallToolResult(content=text(json.dumps(STATE["events"])))
    record({"event": "call", "tool": name, "requestId": ctx.request_id})
    if name == "echo":
        return types.CallToolResult(content=text(str(args.get("text", ""))))
    if name == "add":
        total = int(args["a"]) + int(args["b"])
        return types.CallToolResult(content=text(str(total)), structured_content={"sum": total})
    if name == "bad_output":
        return types.CallToolResult(content=text("n"), structured_content={"n": "not a number"})
    if name in ("createNote", "delete_all"):
        return types.CallToolResult(content=text(f"{name} ok"))
    if name == "slow":
        return await slow(ctx, float(args.get("seconds", 1.0)))
    if name == "fail":
        return types.CallToolResult(content=text("the tool failed on purpose"), is_error=True)
    if name == "rpc_error":
        raise MCPError(code=-32050, message=f"upstream says no: {args.get('text', '')}")
    if name == "media":
        resource = types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
            uri="note://1", mime_type="text/plain", text="embedded"))
        return types.CallToolResult(content=[types.ImageContent(type="image", data=IMAGE, mime_type="image/png"),
                                             resource], structured_content={"kind": "media"})
    if name == "big":
        return types.CallToolResult(content=text("x" * int(args.get("size", 1000))))
    if name == "set_description":
        STATE["echo_description"] = str(args.get("text", ""))
        await ctx.session.send_tool_list_changed()
        return types.CallToolResult(content=text("changed"))
    if name == "crash":
        os._exit(3)
    if name == "pid":
        return types.CallToolResult(content=text(str(os.getpid())))
    if name == "env_hash":
        return types.CallToolResult(content=text(str(_sha(os.environ.get(str(args.get("name")))))))
    if name == "header_hash":
        request = getattr(ctx, "request", None)
        value = request.headers.get(str(args.get("name"))) if request is not None else None
        return types.CallToolResult(content=text(str(_sha(value))))
    if name == "leak":
        secret = os.environ.get(str(args.get("name")), "")
        print(f"leaking to stderr: {secret}", file=sys.stderr, flush=True)
        raise MCPError(code=-32051, message=f"the secret is {secret}")
    if name == "leak_result":
        return types.CallToolResult(content=text(f"here: {os.environ.get(str(args.get('name')), '')}"))
    raise MCPError(code=-32602, message=f"unknown tool {name}")


async def on_cancelled(ctx: Any, params: types.CancelledNotificationParams) -> None:
    record({"event": "cancelled", "requestId": params.request_id, "reason": params.reason})


def build() -> Server[Any]:
    server: Server[Any] = Server("lowlevel-upstream", version="1.0.0", on_list_tools=list_tools,
                                on_call_tool=call_tool)
    server.add_notification_handler("notifications/cancelled", types.CancelledNotificationParams, on_cancelled)
    return server


async def serve_stdio() -> None:
    from mcp.server.lowlevel.server import NotificationOptions
    from mcp.server.stdio import stdio_server

    server = build()
    options = server.create_initialization_options(notification_options=NotificationOptions(tools_changed=True))
    async with stdio_server() as (read, write):
        await server.run(read, write, options)


def serve_http(port: int = 0, json_response: bool = False) -> None:
    import uvicorn

    server = build()
    app = server.streamable_http_app(host="127.0.0.1", json_response=json_response)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1:2] in (["http"], ["http-json"]):
        serve_http(int(sys.argv[2]) if len(sys.argv) > 2 else 0, json_response=sys.argv[1] == "http-json")
    else:
        anyio.run(serve_stdio)
