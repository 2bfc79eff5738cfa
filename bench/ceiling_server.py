"""The stack's own ceiling: a minimal ASGI app on Hypercorn (trio worker) that answers
every request with a fixed JSON-RPC ``tools/call`` result, doing no MCP work at all."""

from __future__ import annotations

import argparse
import json
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "content": [{"type": "text", "text": '{"pong":true,"message":"hi","data":null}'}],
            "structuredContent": {"pong": True, "message": "hi", "data": None, "received_at": "fixed"},
            "isError": False,
        },
    },
    separators=(",", ":"),
).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8300)
    ap.add_argument("--read-timeout", type=int, default=0)
    args = ap.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    if args.read_timeout:
        config.read_timeout = args.read_timeout
    trio.run(serve, app, config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
