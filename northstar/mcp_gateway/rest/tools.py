"""``GET /v1/tools`` (the inventory) and ``POST /v1/tools/{name}/call``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from northstar.common import errors as E
from northstar.mcp_gateway.rest.common import ctx, json_body, services

bp = Blueprint("tools", __name__)


@bp.get("/v1/tools")
async def inventory() -> dict[str, Any]:
    return {"tools": services().gateway.inventory()}


@bp.post("/v1/tools/<name>/call")
async def call(name: str) -> tuple[dict[str, Any], int]:
    body = await json_body()
    arguments = body.get("arguments", {})
    if not isinstance(arguments, dict):
        raise E.ValidationFailed("arguments must be a JSON object", field="arguments")
    timeout = body.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise E.ValidationFailed("timeout_s must be a positive number", field="timeout_s")
    result = await services().gateway.call_tool(ctx(), name, arguments, timeout_s=timeout)
    if not result.ok:
        assert result.error is not None
        if result.audit_seq is not None:
            result.error.details.setdefault("audit_seq", result.audit_seq)
        raise result.error
    return {
        "tool": result.target.get("canonical_name"),
        "output": result.output,
        "audit_seq": result.audit_seq,
        "request_id": ctx().request_id,
    }, 200
