"""The upstream of the federation benchmark: the official SDK's ``MCPServer`` with one tool,
``echo``, on uvicorn over Streamable HTTP with ``json_response=True`` (the SDK's fastest HTTP
configuration) and sessions (what a gateway's client opens: ``initialize``, then calls).

``echo`` is read-only (``readOnlyHint``), so a gateway may call it without a licence, and
answers the same structured ``pong`` as the suite's baseline, so one check fits every path.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel

server = MCPServer("bench-upstream")


class EchoOutput(BaseModel):
    pong: bool = True
    message: str
    data: dict[str, Any] | None = None
    received_at: str


@server.tool(name="echo", description="Returns what it was sent.",
             annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False))
def echo(message: str = "ping", data: dict[str, Any] | None = None) -> EchoOutput:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return EchoOutput(message=message, data=data, received_at=now)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8300)
    args = ap.parse_args()
    import uvicorn

    app = server.streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
