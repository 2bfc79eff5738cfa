"""ASGI plumbing for the HTTP doors: the callable types, header lookups, body reading and JSON answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]


Receive = Callable[[], Awaitable[dict[str, Any]]]


Send = Callable[[dict[str, Any]], Awaitable[None]]


ASGIApp = Callable[..., Awaitable[None]]


HEADERS_KEY = "northstar.headers"


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, first value wins; built once per request."""
    cached: dict[bytes, bytes] | None = scope.get(HEADERS_KEY)
    if cached is None:
        cached = {}
        for key, value in scope["headers"]:
            if key not in cached:
                cached[key] = value
        scope[HEADERS_KEY] = cached
    return cached


def header(scope: Scope, name: bytes) -> str | None:
    value = header_map(scope).get(name)
    return None if value is None else value.decode("latin-1")


def decoded_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """Read the whole body (up to ``limit`` bytes); returns (body, disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def all_headers(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope["headers"] if k == name]


SCOPE_KEY = "northstar.ctx"
