"""``GET /v1/tools`` (the inventory) and ``POST /v1/tools/{name}/call``."""

from __future__ import annotations

from typing import Any

from quart import request

from northstar.common.telemetry import carrier_of
from northstar.mcp_gateway.transports.rest import models as M
from northstar.mcp_gateway.transports.rest import responses as R
from northstar.mcp_gateway.transports.rest.api import Api, Response
from northstar.mcp_gateway.transports.rest.common import ctx, services

api = Api("tools", "tools")
bp = api.blueprint


@api.route("GET", "/v1/tools", summary="The tool inventory",
           responses={200: Response(R.ToolInventory)})
async def inventory() -> dict[str, Any]:
    return {"tools": services().gateway.inventory()}


@api.route("POST", "/v1/tools/{name}/call", summary="Call a tool", path=M.ToolNamePath,
           body=M.ToolCallBody, responses={200: Response(R.ToolCallResult)},
           description="The arguments go in `arguments`; any other top-level key is refused (400). A denial or "
                       "failure is the error envelope, `details.audit_seq` naming its audit record. For an "
                       "operation of an upstream MCP server, `output` is its `structuredContent` (or null), "
                       "`content` its content blocks and `is_error` its own `isError`, passed through. A call "
                       "to a scope that requires approval is held: 409 `approval_pending` with "
                       "`details.approval_id`; re-issue the same call once it is approved.")
async def call(path: M.ToolNamePath, body: M.ToolCallBody) -> tuple[dict[str, Any], int]:
    gateway = services().gateway
    if gateway.tracing.enabled:
        carrier = carrier_of(request.headers, None)
        result = await gateway.call_at_door(ctx(), path.name, dict(body.arguments), carrier, timeout_s=body.timeout_s,
                                            wait_approval=False)
    else:
        result = await gateway.call_tool(ctx(), path.name, dict(body.arguments), timeout_s=body.timeout_s,
                                         wait_approval=False)
    if not result.ok:
        assert result.error is not None
        if result.audit_seq is not None:
            result.error.details.setdefault("audit_seq", result.audit_seq)
        raise result.error
    answer = {
        "tool": result.target.get("canonical_name"),
        "output": result.output,
        "audit_seq": result.audit_seq,
        "request_id": ctx().request_id,
    }
    if result.mcp is not None:
        answer.update(content=result.mcp.get("content") or [], is_error=bool(result.mcp.get("isError")),
                      upstream=result.target.get("upstream"))
    return answer, 200
