"""Helpers shared by the REST blueprints: the services handle, JSON bodies, pagination."""

from __future__ import annotations

import json
from typing import Any

from quart import current_app, g, request

from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.common.limits import MAX_VERSION, check_int, parse_int

MAX_JSON_DEPTH = 64


def services() -> Any:
    return current_app.config["NORTHSTAR_SERVICES"]


def ctx() -> RequestContext:
    value: RequestContext = g.ctx
    return value


def require_admin() -> RequestContext:
    c = ctx()
    if not c.is_admin:
        raise E.AdminRequired()
    return c


def _depth(obj: Any, limit: int) -> None:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise E.ValidationFailed(f"JSON nested deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _reject_constant(name: str) -> Any:
    raise E.InvalidJson(f"{name} is not valid JSON")


async def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or a canonical 400/415."""
    ctype = request.headers.get("content-type", "")
    raw = await request.get_data(cache=True)
    # The media type itself, parameters aside: "application/jsonx" is not JSON (and would have
    # skipped the front door's strict JSON check, which looks at exactly application/json).
    if raw and ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise E.UnsupportedMediaType("send Content-Type: application/json")
    if not raw:
        return {}
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise E.InvalidJson() from exc
    if not isinstance(body, dict):
        raise E.ValidationFailed("the body must be a JSON object")
    _depth(body, MAX_JSON_DEPTH)
    return body


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    """A query parameter in ``[lo, hi]``, ASCII digits only (400 ``validation_error`` otherwise)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    return parse_int(name, raw, lo, hi)


def optional_int_arg(name: str, lo: int, hi: int) -> int | None:
    """Like :func:`int_arg`; absent or empty means None."""
    raw = request.args.get(name)
    return parse_int(name, raw, lo, hi) if raw else None


def expected_version(body: dict[str, Any]) -> int | None:
    value = body.get("expected_version")
    if value is None:
        return None
    return check_int("expected_version", value, 0, MAX_VERSION)
