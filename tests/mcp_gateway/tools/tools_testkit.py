"""Helpers shared by the built-in tool tests (imported by name: this directory is on sys.path)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from northstar.common.identity import RequestContext
from northstar.mcp_gateway.tools.media_v2 import MEDIA_V2, MediaServices
from northstar.mcp_gateway.tools.model import ToolContext, ToolDefinition

SMALL_LIMIT = 64


def tool_ctx(tenant: str = "acme", user: str = "alice", services: Any = None) -> ToolContext:
    request = RequestContext(request_id="req-1", tenant=tenant, user=user)
    return ToolContext(request=request, services=services)


async def call(tool: ToolDefinition, tctx: ToolContext, operation: str, **arguments: Any) -> Any:
    """Validate ``arguments`` with the operation's input model and run its handler, as the gateway does."""
    found = tool.find(operation)
    assert found is not None, operation
    _, op = found
    out: BaseModel = await op.handler(tctx, op.input_model.model_validate(arguments))
    assert isinstance(out, op.output_model)
    return out


async def media_call(
    services: MediaServices, operation: str, *, tenant: str = "acme", **arguments: Any
) -> Any:
    return await call(MEDIA_V2, tool_ctx(tenant, services=services), operation, **arguments)
