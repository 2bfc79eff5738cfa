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
"""

from __future__ import annotations

import json
import re
import select
from dataclasses import dataclass
from typing import Any, BinaryIO

from northstar import __version__
from northstar.compat.mcp_sdk import sdk_is_verified, stdio_result_line

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
    """The client's first stdin line, read before start-up, and the answer already sent."""

    line: bytes  # exactly what ``readline(max_body_bytes + 1)`` returned; b"" at end of input
    answer: bytes | None = None  # the initialize response written to stdout, if any
    rpc_id: int | str | None = None  # its JSON-RPC id


def read_first_line(stdin: BinaryIO, limit: int, wait_s: float = FIRST_LINE_WAIT_S) -> bytes | None:
    """The first line if the client has started sending it within ``wait_s``, else None.

    Reads the way the stdio transport does (``readline(limit + 1)``), so the line can be
    handed to it unchanged. None (nothing read) where stdin cannot be polled.
    """
    try:
        ready, _, _ = select.select([stdin], [], [], wait_s)
    except (OSError, ValueError, TypeError):
        return None
    if not ready:
        return None
    line: bytes = stdin.readline(limit + 1)
    return line


def answer_for(line: bytes, *, max_bytes: int, max_depth: int, max_items: int) -> tuple[int | str, bytes] | None:
    """(id, response line) for an ``initialize`` the SDK would accept, else None."""
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
    return msg["id"], initialize_response(msg["id"], negotiated)


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
                 wait_s: float = FIRST_LINE_WAIT_S) -> FirstLine | None:
    """Read the client's first line if it is there; answer it now if it is a plain ``initialize``."""
    line = read_first_line(stdin, max_bytes, wait_s)
    if line is None:
        return None
    found = answer_for(line, max_bytes=max_bytes, max_depth=max_depth, max_items=max_items)
    if found is None or not sdk_is_verified():
        return FirstLine(line)
    rpc_id, answer = found
    try:
        stdout.write(answer)
        stdout.flush()
    except OSError:
        return FirstLine(line)  # the transport will meet the same closed stdout
    return FirstLine(line, answer, rpc_id)


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
