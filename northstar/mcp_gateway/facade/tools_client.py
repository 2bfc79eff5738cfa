"""The Python entry point for internal callers::

    from northstar.mcp_gateway.facade import tools_client as tools
    out = await tools.call("media_v2.create_asset", {"name": "a.txt", ...}, ctx=ctx)

A call from Python goes through the same gate chain as every other door (firearms,
limits, audit), with ``transport: internal`` unless the context says otherwise. It returns
the tool's output as a dict, or raises the :class:`~northstar.common.errors.NorthstarError`
the gateway answered with (``FirearmRequired``, ``ValidationFailed``, ``UnknownTool`` ...).
The running gateway installs itself here when it starts (``install``); code that holds a
``Gateway`` can use :class:`ToolsClient` directly instead.
"""

from __future__ import annotations

from typing import Any

from northstar.common import errors as E
from northstar.common.identity import RequestContext

_installed: Any = None


class ToolsClient:
    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, *, ctx: RequestContext,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        result = await self.gateway.call_tool(ctx, name, arguments or {}, timeout_s=timeout_s)
        if not result.ok:
            assert result.error is not None
            raise result.error
        return dict(result.output or {})


def install(gateway: Any) -> None:
    global _installed
    _installed = ToolsClient(gateway)


def uninstall() -> None:
    global _installed
    _installed = None


async def call(
    name: str, arguments: dict[str, Any] | None = None, *, ctx: RequestContext, timeout_s: float | None = None
) -> dict[str, Any]:
    """Call a tool by canonical or wire name as the principal in ``ctx``."""
    if _installed is None:
        raise E.ServiceUnavailable("no gateway is running in this process")
    client: ToolsClient = _installed
    return await client.call(name, arguments, ctx=ctx, timeout_s=timeout_s)
