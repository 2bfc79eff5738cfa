"""The Python entry point for code running inside a gateway process::

    async with Runtime(settings).running() as services:
        out = await services.tools.call("media_v2.create_asset", {"name": "a.txt", ...}, ctx=ctx)

A call from Python goes through the same gate chain as every other door (firearms,
limits, audit), with ``transport: internal`` unless the context says otherwise. It returns
the tool's output as a dict, or raises the :class:`~northstar.common.errors.NorthstarError`
the gateway answered with (``FirearmRequired``, ``ValidationFailed``, ``UnknownTool`` ...).
The composition root builds one :class:`ToolsClient` per runtime (``Services.tools``); there is
no process-wide one, so two runtimes in one process never call each other's gateway.
"""

from __future__ import annotations

from typing import Any

from northstar.common.identity import RequestContext
from northstar.mcp_gateway.facade.gateway import Gateway


class ToolsClient:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, *, ctx: RequestContext,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Call a tool by canonical or wire name as the principal in ``ctx``."""
        result = await self.gateway.call_tool(ctx, name, arguments or {}, timeout_s=timeout_s)
        if not result.ok:
            assert result.error is not None
            raise result.error
        return dict(result.output or {})
