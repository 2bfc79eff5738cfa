"""The baseline a user would pick instead of northstar: the official SDK's high-level
``MCPServer`` serving the same ``echo`` tool, on uvicorn (or stdio).

``--json`` answers each POST with one JSON body (``json_response=True``): the SDK's fastest
HTTP configuration, the one a team tuning for speed would deploy, and the suite's headline
baseline. Without it the SDK's default frames every answer as an SSE stream."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

server = MCPServer("baseline")


class PingOutput(BaseModel):
    pong: bool = True
    message: str
    data: dict[str, Any] | None = None
    received_at: str


@server.tool(name="echo__ping", description="Returns what it was sent.")
def echo_ping(message: str = "ping", data: dict[str, Any] | None = None) -> PingOutput:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return PingOutput(message=message, data=data, received_at=now)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8200)
    ap.add_argument("--stateless", action="store_true")
    ap.add_argument("--stdio", action="store_true")
    ap.add_argument("--json", action="store_true", help="json_response=True (the SDK's fastest configuration)")
    args = ap.parse_args()
    if args.stdio:
        server.run("stdio")
        return
    import uvicorn

    app = server.streamable_http_app(stateless_http=args.stateless, json_response=args.json)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
