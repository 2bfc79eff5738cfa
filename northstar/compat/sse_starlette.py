"""sse-starlette's keep-alive ping interval, as the MCP SDK's SSE streams use it.

The SDK answers with ``sse_starlette.EventSourceResponse`` on the legacy ``GET /sse`` stream
and on the Streamable HTTP streams (``GET /mcp``, SSE answers to ``POST /mcp``), and builds
those responses itself, without ``ping=``: they ping at the class default
``EventSourceResponse.DEFAULT_PING_INTERVAL`` (15 s). ``ping=`` is the public way, but the
gateway never constructs these responses, and the SDK takes no ping setting, so
:func:`set_ping_interval` changes the class default (a class attribute without an underscore,
not documented as a setting; it applies to every ``EventSourceResponse`` built without
``ping=`` in this process). The 2026-07-28 era's stream is the SDK's own and pings on its own.

Verified against sse-starlette 3.7.1 with mcp 2.3.0 (:data:`VERIFIED`; ``pyproject.toml``
pins ``sse-starlette>=3.7,<3.8``).
"""

from __future__ import annotations

from sse_starlette import EventSourceResponse

from northstar.compat.versions import IncompatibleLibrary, mismatches

VERIFIED = {"sse-starlette": "3.7.1"}


def unverified() -> list[str]:
    """Why the installed sse-starlette is not the verified one (empty when it is)."""
    return mismatches(VERIFIED, __name__)


def set_ping_interval(seconds: float) -> None:
    """Ping every ``seconds`` on each SSE response built without ``ping=`` (the SDK's)."""
    if not hasattr(EventSourceResponse, "DEFAULT_PING_INTERVAL"):
        raise IncompatibleLibrary("sse_starlette.EventSourceResponse has no DEFAULT_PING_INTERVAL", __name__, VERIFIED)
    EventSourceResponse.DEFAULT_PING_INTERVAL = int(max(1, seconds))


def ping_interval() -> float:
    """The interval an ``EventSourceResponse`` built without ``ping=`` pings at."""
    interval: float = EventSourceResponse.DEFAULT_PING_INTERVAL
    return interval
