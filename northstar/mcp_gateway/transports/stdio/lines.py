"""The stdio door's input and output streams, as the SDK's stdio transport is given them.

Each line from the client gets the checks an HTTP body gets at the front door (strict JSON,
one JSON-RPC message, size and shape limits); a refused line is answered in order with the
error the HTTP doors give, and stdout carries only JSON-RPC."""

from __future__ import annotations

import collections
import logging
from typing import Any

import mcp_types as types

from northstar.common import errors as E
from northstar.common.error_envelope import (
    INVALID_REQUEST,
    PARSE_ERROR,
)

log = logging.getLogger("northstar.mcp")

# -- stdio: bounded, checked lines; an answer for every line that is not a JSON-RPC message --
REJECTED_LINE = "\x00\n"  # stands in for a refused line; never valid JSON


class CheckedLines:
    """A text stdin for ``stdio_server(stdin=anyio.wrap_file(...))``.

    Each line gets the checks an HTTP body gets at the front door (strict JSON, one JSON-RPC
    message, nesting) and a size cap: a line over ``limit`` bytes is read and dropped in
    chunks, so memory stays bounded. A refused line is replaced by :data:`REJECTED_LINE` and
    its error queued for :class:`AnswerMalformedLines`, which answers it in order.
    """

    CHUNK = 64 * 1024

    def __init__(self, raw: Any, limit: int, *, max_json_depth: int = 64, max_json_items: int = 100_000,
                 first_line: bytes | None = None) -> None:
        self.raw = raw
        self.limit = limit
        self.max_json_depth = max_json_depth
        self.max_json_items = max_json_items
        self.errors: collections.deque[tuple[Any, types.ErrorData]] = collections.deque()
        self._first_line = first_line  # already read from ``raw`` (see stdio_handshake)

    def readline(self) -> str:
        from northstar.common.errors import InvalidRequest
        from northstar.mcp_gateway.protocol.jsonrpc import check_mcp_body

        line: bytes
        if self._first_line is not None:
            line, self._first_line = self._first_line, None
        else:
            line = self.raw.readline(self.limit + 1)
        if len(line) > self.limit and not line.endswith(b"\n"):
            while True:
                rest: bytes = self.raw.readline(self.CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            return self.refuse(None, INVALID_REQUEST, f"message larger than {self.limit} bytes")
        if not line:
            return ""  # end of input
        try:
            check_mcp_body(line, self.max_json_depth, self.max_json_items)
        except InvalidRequest as err:
            return self.refuse(err.rpc_id, INVALID_REQUEST, err.message)
        except E.InvalidJson as err:
            return self.refuse(None, PARSE_ERROR, err.message)
        return line.decode("utf-8")

    def refuse(self, rpc_id: Any, code: int, message: str) -> str:
        self.errors.append((rpc_id, types.ErrorData(code=code, message=message)))
        return REJECTED_LINE


class AnswerMalformedLines:
    """The read stream given to the server over stdio.

    The SDK's stdio transport turns a line that is not a JSON-RPC message into an exception
    on the read stream, which the server drops without a word. Here each becomes the answer
    the HTTP doors give (``-32700`` not JSON, ``-32600`` not one valid message or too large),
    written through the transport's own stdout writer, so stdout carries only JSON-RPC.
    """

    def __init__(self, read: Any, write: Any, lines: CheckedLines | None = None) -> None:
        self._read = read
        self._write = write
        self._lines = lines

    @property
    def last_context(self) -> Any:
        return getattr(self._read, "last_context", None)

    async def receive(self) -> Any:
        from mcp.shared.message import SessionMessage

        while True:
            item = await self._read.receive()
            if not isinstance(item, Exception):
                return item
            if self._lines is not None and self._lines.errors:
                rpc_id, data = self._lines.errors.popleft()
            else:
                rpc_id, data = None, types.ErrorData(code=INVALID_REQUEST, message="not a valid JSON-RPC message")
            await self._write.send(SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=rpc_id, error=data)))

    def __aiter__(self) -> AnswerMalformedLines:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._read.aclose()

    async def __aenter__(self) -> AnswerMalformedLines:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SkipEarlyAnswer:
    """The write stream over stdio when ``initialize`` was answered before start-up.

    The SDK session still handles that ``initialize`` (it is its first line), so its state
    is its own; its answer went out already (:mod:`~northstar.mcp_gateway.transports.stdio.handshake`)
    and is dropped here, once, after a check that the two are the same bytes.
    """

    def __init__(self, write: Any, rpc_id: int | str, answer: bytes) -> None:
        self._write = write
        self._rpc_id = rpc_id
        self._answer = answer
        self.pending = True

    async def send(self, item: Any) -> None:
        message = getattr(item, "message", None)
        if (self.pending and isinstance(message, types.JSONRPCResponse | types.JSONRPCError)
                and type(message.id) is type(self._rpc_id) and message.id == self._rpc_id):
            self.pending = False
            ours = (message.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode()
            if ours != self._answer:
                log.error("stdio: the initialize answer sent before start-up differs from the SDK's",
                          extra={"sent": self._answer.decode(), "sdk": ours.decode()})
            return
        await self._write.send(item)

    async def aclose(self) -> None:
        await self._write.aclose()

    async def __aenter__(self) -> SkipEarlyAnswer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
