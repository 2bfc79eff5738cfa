"""Canonical tool names and their wire form.

Canonical names are dotted, ``<tool_id>.<operation>`` (``media_v2.create_asset``). Many MCP
clients (Claude Desktop, the OpenAI and Copilot tool APIs) reject any tool name outside
``^[a-zA-Z0-9_-]{1,64}$``, so on the wire the dot becomes a double underscore::

    media_v2.create_asset  <->  media_v2__create_asset

The mapping is one-to-one and reversible because neither a tool id nor an operation name
may contain ``__`` or start or end with ``_`` (checked when a tool is registered), and
the whole wire name must fit 64 characters. Calls by either name are accepted.
"""

from __future__ import annotations

import re

WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
PART = re.compile(r"^[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?$")
SEPARATOR = "__"


def check_part(kind: str, value: str) -> None:
    if not PART.fullmatch(value) or SEPARATOR in value:
        raise ValueError(
            f"{kind} {value!r} must be lowercase letters, digits, '_' or '-', "
            "not start or end with '_' and not contain '__'"
        )


def to_wire(canonical: str) -> str:
    tool_id, _, op = canonical.partition(".")
    check_part("tool id", tool_id)
    check_part("operation", op)
    wire = f"{tool_id}{SEPARATOR}{op}"
    if not WIRE_NAME.fullmatch(wire):
        raise ValueError(f"wire name {wire!r} is longer than 64 characters")
    return wire


def to_canonical(name: str) -> str:
    """Accept a canonical or a wire name; return the canonical one (unchanged if unknown form)."""
    if "." in name:
        return name
    tool_id, sep, op = name.partition(SEPARATOR)
    return f"{tool_id}.{op}" if sep else name
