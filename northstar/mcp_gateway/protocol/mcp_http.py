"""MCP over HTTP: the protocol versions served, and the media-type rules of a request.

Pure functions over header values; the front door applies them (405 / 415 / 406 / 400)."""

from __future__ import annotations

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

# -- request hygiene: strict JSON, JSON-RPC shape, MCP headers ------------------------------
SUPPORTED_PROTOCOL_VERSIONS = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)


MCP_METHODS = ("GET", "POST", "DELETE")


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def accepts_json_and_sse(value: str | None) -> bool:
    types = {media_type(part) for part in (value or "").split(",")}
    wildcard = "*/*" in types
    has_json = wildcard or bool(types & {"application/json", "application/*"})
    has_sse = wildcard or bool(types & {"text/event-stream", "text/*"})
    return has_json and has_sse
