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
from northstar.mcp_gateway.transports.stdio.list_snapshot import ListSnapshots, result_of

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
                 already_read: bytes = b"") -> None:
        self.raw = raw
        self.limit = limit
        self.max_json_depth = max_json_depth
        self.max_json_items = max_json_items
        self.errors: collections.deque[tuple[Any, types.ErrorData]] = collections.deque()
        self._pending = already_read  # taken from ``raw`` before start-up (see stdio_handshake)

    def readline(self) -> str:
        from northstar.common.errors import InvalidRequest
        from northstar.mcp_gateway.protocol.jsonrpc import check_mcp_body

        line = self._next_raw_line()
        if len(line) > self.limit and not line.endswith(b"\n"):
            self._drain_line()
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

    def _next_raw_line(self) -> bytes:
        """``raw.readline(limit + 1)``, served first from what was read before start-up."""
        if not self._pending:
            line: bytes = self.raw.readline(self.limit + 1)
            return line
        end = self._pending.find(b"\n", 0, self.limit + 1)
        if end >= 0:
            line, self._pending = self._pending[:end + 1], self._pending[end + 1:]
            return line
        head, self._pending = self._pending[:self.limit + 1], self._pending[self.limit + 1:]
        if len(head) > self.limit or self._pending:
            return head  # over the limit: refused, and the rest of it drained, as for any line
        tail: bytes = self.raw.readline(self.limit + 1 - len(head))
        return head + tail

    def _drain_line(self) -> None:
        """Drop the rest of an over-long line, in chunks, so memory stays bounded."""
        if self._pending:
            end = self._pending.find(b"\n")
            self._pending = self._pending[end + 1:] if end >= 0 else b""
            if end >= 0:
                return
        while True:
            rest: bytes = self.raw.readline(self.CHUNK)
            if not rest or rest.endswith(b"\n"):
                return

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

    def __init__(self, read: Any, write: Any, lines: CheckedLines | None = None,
                 tools_list: KeepToolsList | None = None) -> None:
        self._read = read
        self._write = write
        self._lines = lines
        self._tools_list = tools_list

    @property
    def last_context(self) -> Any:
        return getattr(self._read, "last_context", None)

    async def receive(self) -> Any:
        from mcp.shared.message import SessionMessage

        while True:
            item = await self._read.receive()
            if not isinstance(item, Exception):
                if self._tools_list is not None:
                    self._tools_list.requested(getattr(item, "message", None))
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


class KeepToolsList:
    """The write stream over stdio that keeps each ``tools/list`` result for the next launch.

    The reader reports every request (:meth:`requested`); a response to a ``tools/list`` with
    no cursor is kept in ``snapshots`` (:mod:`~northstar.mcp_gateway.transports.stdio.list_snapshot`).
    When the first ``tools/list`` was answered from a snapshot before start-up, the SDK's answer
    to it is dropped here, and if its result differs from what was sent,
    ``notifications/tools/list_changed`` goes out instead, so the client lists again.
    """

    def __init__(self, write: Any, snapshots: ListSnapshots, *, protocol_version: str | None = None,
                 early_id: int | str | None = None, early_result: bytes | None = None) -> None:
        self._write = write
        self._snapshots = snapshots
        self._version = protocol_version
        self._early_id, self._early_result = early_id, early_result
        self._ids: list[int | str] = []  # tools/list requests not yet answered
        self.changed_sent = 0

    def requested(self, message: Any) -> None:
        if isinstance(message, types.JSONRPCRequest) and message.method == "tools/list":
            params = message.params if isinstance(message.params, dict) else {}
            if params.get("cursor") is None and len(self._ids) < 64:
                self._ids.append(message.id)

    async def send(self, item: Any) -> None:
        message = getattr(item, "message", None)
        if isinstance(message, types.JSONRPCResponse) and isinstance(message.result, dict) \
                and "protocolVersion" in message.result and "serverInfo" in message.result:
            self._version = str(message.result["protocolVersion"])  # a handshake answered here
        if not isinstance(message, types.JSONRPCResponse | types.JSONRPCError) or not self._answers_list(message.id):
            await self._write.send(item)
            return
        early = self._early_id is not None and type(message.id) is type(self._early_id) \
            and message.id == self._early_id
        line = message.model_dump_json(by_alias=True, exclude_unset=True).encode()
        result = result_of(message.id, line) if isinstance(message, types.JSONRPCResponse) else None
        if result is not None and self._version is not None:
            self._snapshots.save(self._version, result)
        if not early:
            await self._write.send(item)
            return
        self._early_id = None
        if result != self._early_result:
            from mcp.shared.message import SessionMessage

            log.info("stdio: the catalogue changed since the last launch; the client is told to list again")
            self.changed_sent += 1
            await self._write.send(SessionMessage(types.JSONRPCNotification(
                jsonrpc="2.0", method="notifications/tools/list_changed")))

    def _answers_list(self, rpc_id: Any) -> bool:
        for i, pending in enumerate(self._ids):
            if type(pending) is type(rpc_id) and pending == rpc_id:
                del self._ids[i]
                return True
        return False

    async def aclose(self) -> None:
        await self._write.aclose()

    async def __aenter__(self) -> KeepToolsList:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
