"""Helpers shared by the REST blueprints: the services handle, the caller, the admin check."""

from __future__ import annotations

from typing import Any

from quart import current_app, g

from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.mcp_gateway.transports.services import Services

MAX_JSON_DEPTH = 64


def services() -> Services:
    found: Services = current_app.config["NORTHSTAR_SERVICES"]
    return found


def ctx() -> RequestContext:
    value: RequestContext = g.ctx
    return value


def require_admin() -> RequestContext:
    c = ctx()
    if not c.is_admin:
        raise E.AdminRequired()
    return c


def check_depth(obj: Any, limit: int) -> None:
    """Refuse JSON nested deeper than ``limit`` (the front door checks first; this guards direct use)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise E.ValidationFailed(f"JSON nested deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
