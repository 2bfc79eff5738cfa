"""The optional metrics port (``metrics_bind``): ``GET /metrics`` on a listener of its own.

The main port's ``/metrics`` needs an admin credential (it counts every tenant's calls). A
Prometheus server usually scrapes without one, so an operator may bind the same exposition to
a separate address, typically loopback or a private network (``metrics_bind =
"127.0.0.1:9464"``), where it is served without a credential: whoever can reach that address
can read it. Nothing else is served there (404), and only ``GET`` / ``HEAD`` (405).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class MetricsPort:
    """An ASGI app answering ``/metrics`` from ``exposition()`` (the runtime's registry)."""

    def __init__(self, exposition: Callable[[], str]) -> None:
        self.exposition = exposition

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await answer(send, 404, b"not found\n", "text/plain; charset=utf-8")
        elif scope["method"] not in ("GET", "HEAD"):
            await answer(send, 405, b"method not allowed\n", "text/plain; charset=utf-8", [(b"allow", b"GET, HEAD")])
        else:
            body = self.exposition().encode()
            await answer(send, 200, b"" if scope["method"] == "HEAD" else body, CONTENT_TYPE_LATEST)


async def answer(send: Send, status: int, body: bytes, content_type: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
