"""The last ``tools/list`` answer a stdio principal got, kept to answer the next launch early.

A stdio client cannot use a tool before its first ``tools/list`` reply, and that reply needs
the SDK, the runtime and the store: a second or more on a slow machine, paid on every launch
(Claude Desktop spawns the server each time). The catalogue rarely changes between launches,
so the door keeps the result it last sent to the same principal
(``<data_dir>/stdio/tools-list-<key>.json``, 0600) and :mod:`.handshake` answers a plain first
``tools/list`` from it before anything heavy is imported.

It is only a listing; nothing is granted by it (every call still passes the gate chain). When
the real answer, computed once the runtime is up, differs from what was sent, the door sends
``notifications/tools/list_changed`` (the server advertises ``listChanged``), so the client
lists again and sees the current catalogue, and the snapshot is replaced.

The key covers everything the answer depends on besides the catalogue and the grants: the
principal (tenant, user, mode), the negotiated protocol version, northstar's and the SDK's
versions, and the ``unauthorized_tools`` setting. Standard library only: it runs before start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from northstar import __version__
from northstar.compat.mcp_sdk import VERIFIED

#: A snapshot larger than this is not kept (nor read): the early answer is for ordinary catalogues.
MAX_SNAPSHOT_BYTES = 1 << 20


def response_prefix(rpc_id: int | str) -> bytes:
    """The bytes the SDK's stdio writer puts before a response's ``result``."""
    return b'{"jsonrpc":"2.0","id":' + json.dumps(rpc_id).encode() + b',"result":'


def response_line(rpc_id: int | str, result: bytes) -> bytes:
    return response_prefix(rpc_id) + result + b"}\n"


def result_of(rpc_id: int | str, line: bytes) -> bytes | None:
    """The raw ``result`` of a response line the SDK wrote (without its newline), else None."""
    prefix = response_prefix(rpc_id)
    if not line.startswith(prefix) or not line.endswith(b"}"):
        return None
    return line[len(prefix):-1]


class ListSnapshots:
    """The snapshots of one principal, one per negotiated protocol version."""

    def __init__(self, directory: Path, *key_parts: str) -> None:
        self.directory = directory
        self.key_parts = key_parts

    def path(self, protocol_version: str) -> Path:
        key = json.dumps([*self.key_parts, protocol_version]).encode()
        return self.directory / f"tools-list-{hashlib.sha256(key).hexdigest()[:32]}.json"

    def load(self, protocol_version: str) -> bytes | None:
        """The kept result (a JSON object with a ``tools`` list), or None."""
        try:
            with open(self.path(protocol_version), "rb") as f:
                raw = f.read(MAX_SNAPSHOT_BYTES + 1)
        except OSError:
            return None
        if len(raw) > MAX_SNAPSHOT_BYTES or not _is_tools_result(raw):
            return None
        return raw

    def save(self, protocol_version: str, result: bytes) -> bool:
        """Keep ``result`` (atomically, 0600) unless it is what is kept already; True if written."""
        if len(result) > MAX_SNAPSHOT_BYTES or not _is_tools_result(result):
            return False
        if self.load(protocol_version) == result:
            return False
        target = self.path(protocol_version)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(result)
            os.replace(tmp, target)
        except OSError:
            return False  # a read-only data dir costs only the early answer
        return True


def for_principal(directory: Path, tenant: str, user: str, mode: str, unauthorized_tools: str) -> ListSnapshots:
    """One principal's snapshots, keyed by what the answer depends on besides the catalogue."""
    versions = ",".join(f"{dist}={version}" for dist, version in sorted(VERIFIED.items()))
    return ListSnapshots(directory, __version__, versions, tenant, user, mode, unauthorized_tools)


def _is_tools_result(raw: bytes) -> bool:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    # A paged answer is not kept: the early answer must be the whole list.
    return isinstance(value, dict) and isinstance(value.get("tools"), list) and "nextCursor" not in value
