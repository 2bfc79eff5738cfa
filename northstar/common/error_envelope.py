"""The one place where errors meet the wire.

REST responses carry the canonical envelope::

    {"error": {"code": "...", "message": "...", "http_status": N,
               "request_id": "...", "details": {...}}}

with the same request id in the ``X-Request-Id`` response header. MCP carries the same
fields: in a tool result with ``isError: true`` (policy and tool failures the model should
see) or in a JSON-RPC error's ``data`` (protocol errors). :func:`register_error_handlers`
wires the envelope into a Quart app for every error, including routing 404/405, 413 and
unexpected exceptions (500, no internals leaked, logged with the request id).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from northstar.common import errors as E
from northstar.common.identity import REQUEST_ID_HEADER, new_request_id

log = logging.getLogger("northstar.errors")

# JSON-RPC 2.0 / MCP error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

_HTTP_CODES: dict[int, type[E.NorthstarError]] = {
    400: E.BadRequest,
    401: E.Unauthorized,
    403: E.Forbidden,
    404: E.NotFound,
    405: E.MethodNotAllowed,
    408: E.RequestTimeout,
    409: E.Conflict,
    413: E.PayloadTooLarge,
    415: E.UnsupportedMediaType,
    422: E.Unprocessable,
    429: E.RateLimited,
    503: E.ServiceUnavailable,
}


def envelope(err: E.NorthstarError, request_id: str) -> dict[str, Any]:
    """The canonical error body for ``err``."""
    return {
        "error": {
            "code": err.code,
            "message": err.message,
            "http_status": err.http_status,
            "request_id": request_id,
            "details": dict(err.details),
        }
    }


def error_headers(err: E.NorthstarError, request_id: str) -> dict[str, str]:
    headers = {REQUEST_ID_HEADER: request_id}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    if isinstance(err, E.Unauthorized):
        # An authenticator with OAuth on sets the challenge that names its resource metadata.
        headers["WWW-Authenticate"] = err.www_authenticate
    return headers


def from_exception(exc: BaseException) -> E.NorthstarError:
    """Translate any exception into a NorthstarError; unknown ones become a bare 500."""
    if isinstance(exc, E.NorthstarError):
        return exc
    code = getattr(exc, "code", None)  # werkzeug's HTTPException (routing 404/405, 413 ...)
    if isinstance(code, int) and type(exc).__module__.startswith("werkzeug"):
        return _HTTP_CODES.get(code, E.NorthstarError)()
    return E.NorthstarError()


def jsonrpc_code(err: E.NorthstarError) -> int:
    """The JSON-RPC error code for an error that is reported as a protocol error."""
    if isinstance(err, E.InvalidJson):
        return PARSE_ERROR
    if isinstance(err, E.UnknownTool | E.ValidationFailed):
        return INVALID_PARAMS
    if isinstance(err, E.BadRequest):
        return INVALID_REQUEST
    return INTERNAL_ERROR


def jsonrpc_error(err: E.NorthstarError, request_id: str) -> dict[str, Any]:
    """A JSON-RPC ``error`` member whose ``data`` carries the envelope fields."""
    return {"code": jsonrpc_code(err), "message": err.message, "data": envelope(err, request_id)["error"]}


ERROR_META_KEY = "northstar/error"


def tool_error_payload(err: E.NorthstarError, request_id: str) -> dict[str, Any]:
    """The envelope carried by an MCP ``isError`` result."""
    return envelope(err, request_id)


def tool_error_result(err: E.NorthstarError, request_id: str) -> dict[str, Any]:
    """An MCP ``isError`` result (wire form) for ``err``.

    The envelope rides as JSON text (what the model reads, so it can tell the user which
    firearm is missing) and under ``_meta["northstar/error"]`` (for programs). It is not
    ``structuredContent``: that must conform to the tool's ``outputSchema``, and clients
    built on the TypeScript SDK reject a result whose structured content does not.
    """
    payload = envelope(err, request_id)
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": {ERROR_META_KEY: payload["error"]}}


def _request_id_of_current_request() -> str:
    from quart import g, request  # the web stack is imported only when handlers run

    ctx = getattr(g, "ctx", None)
    if ctx is not None:
        return str(ctx.request_id)
    candidate = request.headers.get(REQUEST_ID_HEADER, "")
    return candidate if candidate.isascii() and 0 < len(candidate) <= 128 else new_request_id()


def register_error_handlers(app: Any) -> None:
    """Map every error raised in ``app`` (a Quart app) to the canonical envelope."""

    async def handle(exc: BaseException) -> Any:
        err = from_exception(exc)
        request_id = _request_id_of_current_request()
        if err.http_status >= 500 and not isinstance(exc, E.NorthstarError):
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
        body = envelope(err, request_id)
        return body, err.http_status, error_headers(err, request_id)

    from werkzeug.exceptions import HTTPException

    app.register_error_handler(Exception, handle)
    app.register_error_handler(HTTPException, handle)
