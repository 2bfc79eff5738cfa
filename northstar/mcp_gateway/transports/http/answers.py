"""Error answers on the MCP paths: a JSON-RPC error whose ``data`` is the canonical envelope.

``send_error`` answers what the front door refuses; :class:`McpAnswers` rewrites the SDK
transports' own error answers (plain text, empty bodies, JSON-RPC errors without data) the
same way, with ``X-Request-Id`` and, on 429/503, ``Retry-After``."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from northstar.common import errors as E
from northstar.common.error_envelope import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    envelope,
    error_headers,
    jsonrpc_code,
)
from northstar.common.identity import REQUEST_ID_HEADER
from northstar.mcp_gateway.protocol.jsonrpc import _valid_id
from northstar.mcp_gateway.transports.http.asgi import Send, send_json
from northstar.mcp_gateway.transports.http.capacity import CapacityLimits, SessionTicket


async def send_error(send: Send, err: E.NorthstarError, request_id: str, *, jsonrpc: bool,
                     status: int | None = None, close: bool = False) -> None:
    status = status or err.http_status
    headers = error_headers(err, request_id)
    if close:  # the request body was not read: this connection cannot carry another request
        headers["Connection"] = "close"
    if isinstance(err, E.MethodNotAllowed) and "allow" in err.details:
        headers["Allow"] = str(err.details["allow"])
    if jsonrpc:
        fields = envelope(err, request_id)["error"]
        fields["http_status"] = status
        if isinstance(err, E.BadRequest):
            code = jsonrpc_code(err)
        else:
            code = INTERNAL_ERROR if status >= 500 else INVALID_REQUEST
        rpc_id = getattr(err, "rpc_id", None)
        body: dict[str, Any] = {
            "jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": err.message, "data": fields}
        }
    else:
        body = envelope(err, request_id)
        body["error"]["http_status"] = status
    await send_json(send, status, body, headers)


# -- answers on the MCP paths: every error a JSON-RPC error with the envelope in data ------
_RPC_CODE_NAMES = {
    PARSE_ERROR: "invalid_json",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
    INTERNAL_ERROR: "internal_error",
    -32020: "header_mismatch",
    -32021: "missing_client_capability",
    -32022: "unsupported_protocol_version",
}


_STATUS_CODE_NAMES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 408: "request_timeout", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 421: "misdirected_request", 429: "rate_limited", 503: "service_unavailable",
}


_ENVELOPE_KEYS = {"code", "message", "http_status", "request_id", "details"}


_MAX_ERROR_BODY = 64 * 1024


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


class McpAnswers:
    """Wraps ``send`` on the MCP paths.

    Error answers of the SDK's transports (plain text, empty bodies, JSON-RPC errors
    without data) are rewritten as a JSON-RPC error whose ``data`` is the canonical
    envelope, with ``X-Request-Id`` and, on 429/503, ``Retry-After``; successful answers
    pass untouched. It also tells a :class:`SessionTicket` the id of the session opened.
    """

    def __init__(self, send: Send, request_id: str, ticket: SessionTicket | None = None) -> None:
        self.send = send
        self.request_id = request_id
        self.ticket = ticket
        self.start: dict[str, Any] | None = None
        self.body = b""
        self.passthrough = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.passthrough:
            await self.send(message)
            return
        kind = message["type"]
        if kind == "http.response.start":
            status = int(message["status"])
            if status < 400:
                self.passthrough = True
                if self.ticket is not None and status < 300:
                    sid = next((v for k, v in message.get("headers", []) if k.lower() == b"mcp-session-id"), None)
                    if sid:
                        self.ticket.opened(sid.decode("latin-1"))
                await self.send(message)
                return
            self.start = message
            return
        if kind == "http.response.body" and self.start is not None:
            if len(self.body) < _MAX_ERROR_BODY:
                self.body += message.get("body", b"")[:_MAX_ERROR_BODY]
            if message.get("more_body", False):
                return
            self.passthrough = True
            await self.rewrite(self.start, self.body)
            return
        await self.send(message)

    async def rewrite(self, start: dict[str, Any], body: bytes) -> None:
        status = int(start["status"])
        error: dict[str, Any] = {}
        rid: Any = None
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
            rid = parsed.get("id") if _valid_id(parsed.get("id")) else None
        code = error.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = INTERNAL_ERROR if status >= 500 else INVALID_REQUEST
        message = error.get("message") if isinstance(error.get("message"), str) else None
        if message is None:
            text = body.decode("utf-8", "replace").strip()
            message = text if text and len(text) <= 200 and text.isprintable() else _status_phrase(status)
        if message.startswith("Validation error") or "input_value" in message:
            # The SDK's pydantic report: internals, not an answer. The request was not a valid message.
            code, message = INVALID_REQUEST, "not a valid JSON-RPC message"
        message = message[:300]
        data = error.get("data")
        if isinstance(data, dict) and set(data) >= _ENVELOPE_KEYS:
            fields = {**data, "http_status": status}
        else:
            details = data if isinstance(data, dict) else ({} if data is None else {"data": data})
            # -32600 and -32603 say little beyond their status; other codes say more
            generic = {INVALID_REQUEST: 400, INTERNAL_ERROR: 500}
            specific = code not in generic or generic[code] == status
            name = _RPC_CODE_NAMES.get(code) if specific else _STATUS_CODE_NAMES.get(status)
            fields = {"code": name or _STATUS_CODE_NAMES.get(status, "error"),
                      "message": message, "http_status": status, "request_id": self.request_id,
                      "details": details}
        payload = json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message,
                                                                      "data": fields}},
                             separators=(",", ":")).encode()
        drop = {b"content-type", b"content-length", REQUEST_ID_HEADER.encode()}
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in drop]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    (REQUEST_ID_HEADER.encode(), self.request_id.encode())]
        if status in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in headers):
            headers.append((b"retry-after", str(CapacityLimits.RETRY_AFTER_S).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload})
