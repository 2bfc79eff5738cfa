"""JSON-RPC 2.0 as MCP allows it: one message per request, ids the gateway can echo, bounded params.

Pure checks with no I/O, shared by the HTTP doors and stdio: a message that fails them is
refused (-32700 / -32600) before anything runs."""

from __future__ import annotations

from typing import Any

from northstar.common import errors as E
from northstar.common.errors import InvalidRequest
from northstar.common.limits import INT64_MAX, INT64_MIN, MAX_CURSOR_CHARS, MAX_JSONRPC_ID_CHARS
from northstar.mcp_gateway.protocol.strict_json import (
    MAX_JSON_DEPTH,
    MAX_JSON_ITEMS,
    JsonTooComplex,
    check_json_shape,
    fast_strict_json,
    parse_strict_json,
)


def _valid_id(value: Any) -> bool:
    """An id the gateway can echo: a bounded string, or an integer within signed 64 bits.

    Wider integers exist in JSON, but not in the encoder of the answer (nor in most clients):
    a request with such an id would run and then have no answer it could be given.
    """
    if isinstance(value, str):
        return len(value) <= MAX_JSONRPC_ID_CHARS
    return type(value) is int and INT64_MIN <= value <= INT64_MAX  # type(...) is int: no bools


ID_RULE = f"a string of at most {MAX_JSONRPC_ID_CHARS} characters or an integer within signed 64 bits"


def _valid_number(value: Any) -> bool:
    return _valid_id(value) if type(value) is int else type(value) is float  # floats are finite here


def check_params(msg: dict[str, Any], echo: Any) -> None:
    """The numbers and tokens in ``params`` that the gateway (or the SDK for it) acts on or echoes.

    ``_meta.progressToken`` is echoed in progress notifications; ``requestId`` of a cancel and
    ``progressToken`` of a progress notification name a request; a ``cursor`` is sent back.
    Each is a dict lookup or two: no walk over the message.
    """
    params = msg.get("params")
    if not params:
        return
    meta = params.get("_meta")
    if isinstance(meta, dict) and "progressToken" in meta and not _valid_id(meta["progressToken"]):
        raise InvalidRequest(f'"_meta.progressToken" must be {ID_RULE}', rpc_id=echo)
    cursor = params.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS):
        raise InvalidRequest(f'"cursor" must be a string of at most {MAX_CURSOR_CHARS} characters', rpc_id=echo)
    method = msg["method"]
    if method == "notifications/cancelled" and "requestId" in params and not _valid_id(params["requestId"]):
        raise InvalidRequest(f'"requestId" must be {ID_RULE}')
    if method == "notifications/progress" and not (
        _valid_id(params.get("progressToken")) and _valid_number(params.get("progress"))
        and ("total" not in params or _valid_number(params["total"]))
    ):
        raise InvalidRequest(f'"progressToken" must be {ID_RULE}; "progress" and "total" numbers')


def check_jsonrpc(msg: Any) -> dict[str, Any]:
    """One JSON-RPC 2.0 request, notification or response, as MCP allows; else InvalidRequest.

    Ids (and the tokens in :func:`check_params`) have a declared range: a request whose id
    could not be echoed is refused here, before it runs.
    """
    if isinstance(msg, list):
        raise InvalidRequest("JSON-RPC batches are not supported: send one message per request")
    if not isinstance(msg, dict):
        raise InvalidRequest("the body must be one JSON-RPC message object")
    rid = msg.get("id")
    echo = rid if _valid_id(rid) else None
    if msg.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"', rpc_id=echo)
    if "id" in msg and not _valid_id(rid):
        raise InvalidRequest(f'"id" must be {ID_RULE}')
    if "method" in msg:
        if not isinstance(msg["method"], str) or not msg["method"]:
            raise InvalidRequest('"method" must be a non-empty string', rpc_id=echo)
        if "params" in msg and not isinstance(msg["params"], dict):
            raise InvalidRequest('"params" must be an object', rpc_id=echo)
        if "result" in msg or "error" in msg:
            raise InvalidRequest("a message is a request or a response, not both", rpc_id=echo)
        check_params(msg, echo)
    elif "result" in msg or "error" in msg:
        if "id" not in msg:
            raise InvalidRequest('a JSON-RPC response needs an "id"')
        if ("result" in msg) == ("error" in msg):
            raise InvalidRequest('a JSON-RPC response has exactly one of "result" and "error"', rpc_id=echo)
        if "result" in msg and not isinstance(msg["result"], dict):
            raise InvalidRequest('"result" must be an object', rpc_id=echo)
        error = msg.get("error", {"code": 0, "message": ""})
        code = error.get("code") if isinstance(error, dict) else None
        if (not isinstance(code, int) or isinstance(code, bool)
                or not isinstance(error.get("message"), str)):
            raise InvalidRequest('"error" must be an object with an integer code and a message', rpc_id=echo)
    else:
        raise InvalidRequest("not a JSON-RPC request, notification or response", rpc_id=echo)
    return msg


def check_mcp_body(body: bytes, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> dict[str, Any]:
    """Shape limits, strict JSON, one JSON-RPC message: InvalidRequest / InvalidJson otherwise."""
    quick = fast_strict_json(body, max_depth, max_items)
    if quick is not None:
        return check_jsonrpc(quick)
    try:
        check_json_shape(body, max_depth=max_depth, max_items=max_items)
    except JsonTooComplex as exc:
        raise InvalidRequest(str(exc)) from None
    return check_jsonrpc(parse_strict_json(body))


def check_rest_json(body: bytes, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> None:
    """Shape limits and strict JSON for a REST body (ValidationFailed / InvalidJson otherwise)."""
    try:
        check_json_shape(body, max_depth=max_depth, max_items=max_items)
    except JsonTooComplex as exc:
        raise E.ValidationFailed(str(exc)) from None
    parse_strict_json(body)
