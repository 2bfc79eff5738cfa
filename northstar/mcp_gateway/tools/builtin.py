"""The built-in tool set and the default scope-to-firearm bindings.

Built-in definitions are immutable module constants; the services they need (media_v2's
store and blobs) are supplied per call through ``ToolContext.services``, never held here.
"""

from __future__ import annotations

from typing import Final

from northstar.mcp_gateway.tools.echo import ECHO
from northstar.mcp_gateway.tools.media_v2 import MEDIA_V2
from northstar.mcp_gateway.tools.model import ToolDefinition

# Scopes not listed here need no firearm.
DEFAULT_FIREARM_BINDINGS: Final[dict[str, str]] = {"media.write": "firearm.media.write"}


def builtin_tools() -> list[ToolDefinition]:
    """The built-in tools, in catalogue order: ``echo``, ``media_v2``."""
    return [ECHO, MEDIA_V2]
