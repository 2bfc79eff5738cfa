"""Answer a stdio client's ``initialize`` before the MCP SDK and the runtime are loaded.

Claude Desktop spawns ``northstar stdio`` on every launch and writes ``initialize`` at once.
Loading the SDK and starting the supervision tree takes a second or more on a slow machine,
and ``initialize`` needs none of it: its result is the server's identity and capabilities,
which are fixed. So when the client's first line is already there and is an ``initialize``
request of a shape the SDK is known to accept, :func:`answer_early` writes the answer the
SDK would write, byte for byte, before anything heavy is imported.

The line itself is not lost: it is handed to the SDK's session as its first line
(:class:`~northstar.mcp_gateway.transports.mcp_face.CheckedLines`), which negotiates and records the
connection state exactly as before; its answer, equal to the early one, is dropped
(:class:`~northstar.mcp_gateway.transports.mcp_face.SkipEarlyAnswer`, which also compares the two).
Any other first line (another method, ``_meta``, unusual capabilities, a line the stdio
checks would refuse, a line not yet sent) is left to the SDK, untouched.

The early answer is only given under the SDK versions it was verified against
(:data:`northstar.compat.mcp_sdk.VERIFIED`, which also writes its bytes the SDK's way:
:func:`~northstar.compat.mcp_sdk.stdio_result_line`); ``tests/mcp_gateway/test_stdio_handshake.py``
compares it with the SDK session's own answer for every protocol version and every accepted shape.

The first ``tools/list`` can be answered early too, from the last answer the same principal got
(:mod:`.list_snapshot`): when ``initialize`` was answered here, a snapshot is kept, and the
client's next lines (within the same wait each) are a plain ``notifications/initialized`` and a
plain ``tools/list``. Every byte read here is handed on to the SDK's session, which handles each
line as usual; its answers to the lines answered here are dropped
(:class:`~northstar.mcp_gateway.transports.stdio.lines.SkipEarlyAnswer`), and where its
``tools/list`` result differs from the snapshot's, ``notifications/tools/list_changed`` follows.
"""

from __future__ import annotations

import json
import os
import re
import select
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from northstar import __version__
from northstar.compat.mcp_sdk import sdk_is_verified, stdio_result_line
from northstar.mcp_gateway.transports.stdio.list_snapshot import ListSnapshots, response_line

SERVER_NAME = "northstar"
SERVER_TITLE = "northstar"
SERVER_DESCRIPTION = "A governed MCP gateway"
INSTRUCTIONS = "Tools are governed by per-scope firearms; a denial names the missing firearm."

#: ``mcp_types.version``'s handshake-era versions (a test keeps these equal).
HANDSHAKE_PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION = "2025-11-25"

#: What ``McpFace.init_options()`` advertises: tools (list_changed on) and resources.
CAPABILITIES: dict[str, Any] = {
    "resources": {"listChanged": False, "subscribe": False},
    "tools": {"listChanged": True},
}

#: How long to wait for the client's first line before starting without it (the setting
#: ``stdio_first_line_wait_s``).
FIRST_LINE_WAIT_S = 0.1

_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CLIENT_INFO_FIELDS = frozenset({"name", "version", "title", "description", "websiteUrl"})


@dataclass(frozen=True)
class FirstLine:
    """What was read from stdin before start-up, and the answers already sent."""

    read: bytes  # every byte taken from stdin (whole lines, maybe a partial last one); b"" at end of input
    answer: bytes | None = None  # the initialize response written to stdout, if any
    rpc_id: int | str | None = None  # its JSON-RPC id
    list_id: int | str | None = None  # the tools/list answered from a snapshot, if any
    list_result: bytes | None = None  # the snapshot's result, as sent
    protocol_version: str | None = None  # negotiated by the early initialize answer


class EarlyLines:
    """Lines read straight from stdin's file descriptor, each within a wait.

    Nothing is buffered out of sight (no ``BufferedReader`` read-ahead), so every byte taken is
    in :attr:`read`, to be handed on to the transport whole.
    """

    CHUNK = 64 * 1024

    def __init__(self, stdin: BinaryIO, limit: int) -> None:
        self.fd = stdin.fileno()
        self.limit = limit
        self.read = b""
        self.pos = 0  # where the next line starts in ``read``
        self.eof = False

    def next_line(self, wait_s: float) -> bytes | None:
        """The next whole line (b"" at end of input), or None: none within ``wait_s``, or longer than the limit."""
        deadline = time.monotonic() + wait_s
        while True:
            end = self.read.find(b"\n", self.pos)
            if end >= 0 and end - self.pos < self.limit:
                line, self.pos = self.read[self.pos:end + 1], end + 1
                return line
            if end >= 0 or len(self.read) - self.pos > self.limit:
                return None  # too long: the transport refuses it
            if self.eof:
                return b"" if self.pos == len(self.read) else None
            try:
                ready, _, _ = select.select([self.fd], [], [], max(deadline - time.monotonic(), 0.0))
            except (OSError, ValueError):
                return None
            if not ready:
                return None
            chunk = os.read(self.fd, self.CHUNK)
            self.eof = not chunk
            self.read += chunk


def read_first_line(stdin: BinaryIO, limit: int, wait_s: float = FIRST_LINE_WAIT_S) -> bytes | None:
    """The first line if the client has sent it within ``wait_s`` (b"" at end of input), else None.

    None too where stdin cannot be polled. The bytes read past it are lost here: this is for
    looking only; :func:`answer_early` keeps them.
    """
    try:
        reader = EarlyLines(stdin, limit)
    except (OSError, ValueError, AttributeError):
        return None
    return reader.next_line(wait_s)


def answer_for(line: bytes, *, max_bytes: int, max_depth: int,
               max_items: int) -> tuple[int | str, bytes, str] | None:
    """(id, response line, negotiated version) for an ``initialize`` the SDK would accept, else None."""
    if len(line) > max_bytes or not line.endswith(b"\n"):
        return None
    try:
        msg = json.loads(line.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_constant=_refuse,
                         parse_float=_refuse)
    except (ValueError, RecursionError):
        return None
    if not _initialize_shape(msg) or not _within(msg, max_depth, max_items):
        return None
    requested = msg["params"]["protocolVersion"]
    negotiated = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    return msg["id"], initialize_response(msg["id"], negotiated), negotiated


def initialize_response(rpc_id: int | str, protocol_version: str) -> bytes:
    """The SDK's JSON-RPC line for northstar's ``InitializeResult``."""
    result = {
        "capabilities": CAPABILITIES,
        "instructions": INSTRUCTIONS,
        "protocolVersion": protocol_version,
        "serverInfo": {"description": SERVER_DESCRIPTION, "name": SERVER_NAME, "title": SERVER_TITLE,
                       "version": __version__},
    }
    return stdio_result_line(rpc_id, result)


def answer_early(stdin: BinaryIO, stdout: BinaryIO, *, max_bytes: int, max_depth: int, max_items: int,
                 wait_s: float = FIRST_LINE_WAIT_S, snapshots: ListSnapshots | None = None) -> FirstLine | None:
    """Read the client's first lines if they are there; answer a plain ``initialize`` now, and
    a plain first ``tools/list`` after it from ``snapshots``. None when nothing was read."""
    try:
        reader = EarlyLines(stdin, max_bytes)
    except (OSError, ValueError, AttributeError):
        return None  # stdin cannot be polled
    line = reader.next_line(wait_s)
    found = None if not line else answer_for(line, max_bytes=max_bytes, max_depth=max_depth, max_items=max_items)
    if found is None or not sdk_is_verified():
        return FirstLine(reader.read) if reader.read or line == b"" else None
    rpc_id, answer, version = found
    if not _write(stdout, answer):
        return FirstLine(reader.read)  # the transport will meet the same closed stdout
    cached = None if snapshots is None else snapshots.load(version)
    if cached is None or not _is_initialized(reader.next_line(wait_s)):
        return FirstLine(reader.read, answer, rpc_id, protocol_version=version)
    list_id = _plain_tools_list(reader.next_line(wait_s))
    if list_id is None or not _write(stdout, response_line(list_id, cached)):
        return FirstLine(reader.read, answer, rpc_id, protocol_version=version)
    return FirstLine(reader.read, answer, rpc_id, list_id, cached, version)


def _write(stdout: BinaryIO, data: bytes) -> bool:
    try:
        stdout.write(data)
        stdout.flush()
    except OSError:
        return False
    return True


def _loads(line: bytes | None) -> Any:
    if not line:
        return None
    try:
        return json.loads(line.decode("utf-8"), object_pairs_hook=_unique_pairs, parse_constant=_refuse,
                          parse_float=_refuse)
    except (ValueError, RecursionError):
        return None


def _is_initialized(line: bytes | None) -> bool:
    msg = _loads(line)
    return isinstance(msg, dict) and msg.get("jsonrpc") == "2.0" \
        and msg.get("method") == "notifications/initialized" and set(msg) <= {"jsonrpc", "method", "params"} \
        and msg.get("params", {}) == {}


def _plain_tools_list(line: bytes | None) -> int | str | None:
    """The id of a ``tools/list`` with no cursor and no ``_meta``, else None."""
    msg = _loads(line)
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or msg.get("method") != "tools/list":
        return None
    if not {"jsonrpc", "id", "method"} <= set(msg) <= {"jsonrpc", "id", "method", "params"}:
        return None
    if msg.get("params", {}) != {} or not _plain_id(msg["id"]):
        return None
    rpc_id: int | str = msg["id"]
    return rpc_id


# -- the accepted shape -------------------------------------------------------------------
class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey()
    return out


def _refuse(text: str) -> Any:
    raise ValueError(text)  # NaN, Infinity and every float: never in a plain initialize


def _initialize_shape(msg: Any) -> bool:
    if not isinstance(msg, dict) or set(msg) != {"jsonrpc", "id", "method", "params"}:
        return False
    if msg["jsonrpc"] != "2.0" or msg["method"] != "initialize" or not _plain_id(msg["id"]):
        return False
    params = msg["params"]
    if not isinstance(params, dict) or set(params) != {"protocolVersion", "capabilities", "clientInfo"}:
        return False
    version, caps, info = params["protocolVersion"], params["capabilities"], params["clientInfo"]
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        return False
    if not isinstance(info, dict) or not {"name", "version"} <= set(info) <= _CLIENT_INFO_FIELDS:
        return False
    if not all(isinstance(v, str) for v in info.values()):
        return False
    return isinstance(caps, dict) and all(_capability(k, v) for k, v in caps.items()) and _no_surrogates(msg)


def _plain_id(value: Any) -> bool:
    if isinstance(value, str):
        return _ID.fullmatch(value) is not None
    return type(value) is int and 0 <= value < 2**53


def _capability(name: str, value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    if name == "roots":
        return set(value) <= {"listChanged"} and all(isinstance(v, bool) for v in value.values())
    if name in ("sampling", "elicitation"):
        members = {"context", "tools"} if name == "sampling" else {"form", "url"}
        return set(value) <= members and all(v == {} for v in value.values())
    if name in ("experimental", "extensions"):
        return all(isinstance(v, dict) and all(_scalar(x) for x in v.values()) for v in value.values())
    return False


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | str) or type(value) is int


def _no_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return not any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return all(_no_surrogates(k) and _no_surrogates(v) for k, v in value.items())
    return True


def _within(value: Any, max_depth: int, max_items: int) -> bool:
    """The stdio checks' limits, counted as they count: containers plus separators, nesting."""
    containers = separators = depth = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            containers += 1
            separators += max(len(node) - 1, 0)
            depth = max(depth, level)
            stack.extend((v, level + 1) for v in node.values())
    return depth <= max_depth and containers + separators <= max_items
