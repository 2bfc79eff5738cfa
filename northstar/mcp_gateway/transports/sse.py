"""The legacy HTTP+SSE door (protocol 2024-11-05): ``GET /sse`` opens a session's stream,
``POST /messages/?session_id=...`` carries the client's messages.

The SDK's ``SseServerTransport`` does the protocol; this door runs the MCP server on each
stream and answers in the gateway's own error language. The front door has already checked
Host and Origin, the caller's identity (``scope["user"]``, which binds the session to its
principal: another principal's message gets 404), method, media type and body, and counted
the stream against the caps.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecuritySettings

from northstar.common import errors as E
from northstar.mcp_gateway.transports.http.answers import send_error
from northstar.mcp_gateway.transports.http.front_door import FrontDoor
from northstar.mcp_gateway.transports.mcp_face import McpFace

log = logging.getLogger("northstar.server")

MESSAGES_ENDPOINT = "/messages/"


class LegacySse:
    """``connect`` (GET /sse) and ``post`` (POST /messages/), the two ASGI apps of the door."""

    def __init__(self, mcp: McpFace, security: TransportSecuritySettings) -> None:
        self.mcp = mcp
        self.transport = SseServerTransport(MESSAGES_ENDPOINT, security_settings=security)

    async def post(self, scope: Any, receive: Any, send: Any) -> None:
        """The message endpoint, minus an SDK race: a message for a session whose stream
        is closing is accepted (202) and then handed to a closed stream, which raised out of the
        application. The client is gone; the message has nowhere to go."""
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.transport.handle_post_message(scope, receive, watch)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.info("a message arrived for a legacy SSE session that was closing; dropped")
            if not started:
                err = E.NotFound("Could not find session")
                await send_error(send, err, FrontDoor.request_id_of(scope), jsonrpc=True)

    async def connect(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            err = E.MethodNotAllowed("the SSE stream is opened with GET")
            await send_error(send, err, FrontDoor.request_id_of(scope), jsonrpc=True)
            return
        try:
            async with self.transport.connect_sse(scope, receive, send) as (read, write):
                await self.mcp.server.run(read, write, self.mcp.init_options())
        except ValueError:
            return  # the transport already answered (a rejected request)
