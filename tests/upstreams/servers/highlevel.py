"""A real upstream built with the SDK's high-level ``MCPServer``, served over legacy SSE.

    python highlevel.py sse        # prints the bound port on its first stdout line
    python highlevel.py stdio
"""

from __future__ import annotations

import hashlib
import socket
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel

server = MCPServer("highlevel-upstream")


class Weather(BaseModel):
    city: str
    celsius: float


@server.tool(description="Today's weather in a city.", annotations=ToolAnnotations(read_only_hint=True))
def get_weather(city: str) -> Weather:
    return Weather(city=city, celsius=21.5)


@server.tool(description="Book a table.", annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
def book_table(people: int) -> str:
    return f"booked for {people}"


@server.tool(description="Wait, reporting progress.", annotations=ToolAnnotations(read_only_hint=True))
async def wait(seconds: float, ctx: Context) -> str:
    for n in range(5):
        await ctx.report_progress(n, 5)
        await anyio.sleep(seconds / 5)
    return "waited"


@server.tool(description="SHA-256 of a request header.", annotations=ToolAnnotations(read_only_hint=True))
def header_hash(name: str, ctx: Context) -> str:
    request = ctx.request_context.request
    value = request.headers.get(name) if request is not None else None
    return str(None if value is None else hashlib.sha256(value.encode()).hexdigest())


def serve_sse() -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(server.sse_app(), log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1:] == ["sse"]:
        serve_sse()
    else:
        server.run("stdio")
