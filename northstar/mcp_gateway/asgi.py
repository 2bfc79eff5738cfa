"""The front door: one small ASGI router in front of every HTTP surface.

For every HTTP request it (1) checks Host and Origin (DNS-rebinding protection), (2)
authenticates the caller into a :class:`RequestContext` (MCP paths; REST does it in Quart),
(3) on the MCP paths checks method, media types and ``MCP-Protocol-Version`` (405/415/406/400),
(4) enforces the body size limit and a read deadline (413/408), (5) checks the body: an MCP
body must be one JSON-RPC message in strict JSON within the shape limits, a JSON REST body
strict JSON (400), (6) counts SSE streams and new sessions against the caps (429/503), and
(7) routes:

* ``/mcp``            -> the SDK's Streamable HTTP session manager (both protocol eras)
* ``/sse``            -> the SDK's legacy HTTP+SSE transport (GET opens the stream)
* ``/messages/``      -> its message endpoint (POST)
* anything else       -> the Quart-Trio app (REST API, health, metrics)

Errors found here are answered in the surface's own language: a JSON-RPC error object
(with the envelope fields in ``error.data``) on the MCP paths, the canonical envelope on
REST; the SDK transports' own error answers are rewritten the same way (:class:`McpAnswers`).
The identity is put in the ASGI scope under ``northstar.ctx`` and, for session binding, as
``scope["user"]``: a session opened by one principal answers 404 to any other.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Container
from http import HTTPStatus
from typing import Any

import orjson
import trio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

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
from northstar.common.identity import REQUEST_ID_HEADER, Transport, new_request_id
from northstar.common.limits import INT64_MAX, INT64_MIN, MAX_CURSOR_CHARS, MAX_JSONRPC_ID_CHARS
from northstar.mcp_gateway.mcp_server import SCOPE_KEY

log = logging.getLogger("northstar.http")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

MCP_PATHS = ("/mcp", "/mcp/")
STATELESS_PATH = "/mcp/stateless"
BODY_KEY = "northstar.body"
MESSAGE_KEY = "northstar.message"  # the checked JSON-RPC message of an MCP POST
SSE_PATH = "/sse"
MESSAGES_PREFIX = "/messages"


class HostOriginPolicy:
    """Allowed Host and Origin values; ``host:*`` patterns match any port."""

    def __init__(self, hosts: list[str], origins: list[str]) -> None:
        self.hosts = hosts
        self.origins = origins

    @classmethod
    def for_bind(cls, host: str, extra_hosts: list[str], extra_origins: list[str]) -> HostOriginPolicy:
        loop_hosts = ["127.0.0.1", "localhost", "[::1]"]
        hosts = [*extra_hosts]
        origins = [*extra_origins]
        if host in ("127.0.0.1", "localhost", "::1") or not extra_hosts:
            hosts += [*loop_hosts, *(f"{h}:*" for h in loop_hosts)]
            origins += [f"{s}://{h}:*" for s in ("http", "https") for h in loop_hosts]
            origins += [f"{s}://{h}" for s in ("http", "https") for h in loop_hosts]
        if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
            hosts += [host, f"{host}:*"]
        return cls(hosts, origins)

    @staticmethod
    def _match(value: str, allowed: list[str]) -> bool:
        if "*" in allowed or value in allowed:
            return True
        # "host:*" matches that host with any port: digits only ("localhost:1.evil.com" is no port)
        return any(
            a.endswith(":*") and value.startswith(a[:-1]) and value[len(a) - 1:].isdigit() for a in allowed
        )

    def host_ok(self, host: str | None) -> bool:
        return bool(host) and self._match(host.lower(), self.hosts)  # type: ignore[union-attr]

    def origin_ok(self, origin: str | None) -> bool:
        return origin is None or self._match(origin.lower(), self.origins)


HEADERS_KEY = "northstar.headers"


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by (lower-case) name, first value wins; built once per request."""
    cached: dict[bytes, bytes] | None = scope.get(HEADERS_KEY)
    if cached is None:
        cached = {}
        for key, value in scope["headers"]:
            if key not in cached:
                cached[key] = value
        scope[HEADERS_KEY] = cached
    return cached


def header(scope: Scope, name: bytes) -> str | None:
    value = header_map(scope).get(name)
    return None if value is None else value.decode("latin-1")


def decoded_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


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


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """Read the whole body (up to ``limit`` bytes); returns (body, disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


# -- request hygiene: strict JSON, JSON-RPC shape, MCP headers ------------------------------
SUPPORTED_PROTOCOL_VERSIONS = (*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS)
MAX_JSON_DEPTH = 64
MAX_JSON_ITEMS = 100_000
PARSE_IN_THREAD_BYTES = 64 * 1024  # bigger bodies are parsed off the event loop
FAST_PARSE_BYTES = 16 * 1024  # smaller ones may take the orjson path (fast_strict_json)
MCP_METHODS = ("GET", "POST", "DELETE")


class NotAcceptable(E.NorthstarError):
    code = "not_acceptable"
    http_status = 406
    default_message = "not acceptable"


class InvalidRequest(E.BadRequest):
    """Well-formed JSON that is not one valid JSON-RPC message (JSON-RPC -32600)."""

    code = "invalid_request"
    default_message = "not a valid JSON-RPC request"

    def __init__(self, message: str | None = None, *, rpc_id: Any = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.rpc_id = rpc_id


class UnsupportedProtocolVersion(E.BadRequest):
    code = "unsupported_protocol_version"
    default_message = "Unsupported protocol version"


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key[:64])
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 would become inf, then null on the way out
        raise ValueError("number out of range")
    return value


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"[]{},")


class JsonTooComplex(Exception):
    pass


def check_json_shape(body: bytes, *, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> None:
    """Refuse deep or huge JSON before parsing it, at C speed, in bounded memory.

    Strings are cut out, then only brackets and commas are looked at: more than
    ``max_items`` values (containers + separators) or nesting deeper than ``max_depth``
    raises :class:`JsonTooComplex`. A 4 MiB body of ``[],[],...`` would otherwise become
    a million Python lists, twice (here and in the SDK), for seconds of CPU.
    """
    skeleton = _JSON_STRING.sub(b"", body).translate(None, _NOT_STRUCTURE)
    opens = skeleton.count(b"[") + skeleton.count(b"{")
    if opens + skeleton.count(b",") > max_items:
        raise JsonTooComplex(f"JSON with more than {max_items} values")
    brackets = skeleton.translate(None, b",")
    steps = (1 if c in (0x5B, 0x7B) else -1 for c in brackets)
    if max(itertools.accumulate(steps), default=0) > max_depth:
        raise JsonTooComplex(f"JSON nested deeper than {max_depth} levels")


def _measure(obj: Any, depth: int = 1) -> tuple[int, int, bool]:
    """(nesting depth, object keys in all, no float anywhere) of a parsed JSON value."""
    kind = type(obj)
    if kind is dict:
        deepest, keys, finite = depth, len(obj), True
        for value in obj.values():
            if type(value) in (dict, list, float):
                d, k, f = _measure(value, depth + 1)
                deepest, keys, finite = max(deepest, d), keys + k, finite and f
        return deepest, keys, finite
    if kind is list:
        deepest, keys, finite = depth, 0, True
        for value in obj:
            if type(value) in (dict, list, float):
                d, k, f = _measure(value, depth + 1)
                deepest, keys, finite = max(deepest, d), keys + k, finite and f
        return deepest, keys, finite
    if kind is float:  # orjson turns integers beyond 64 bits into floats: let the careful path decide
        return depth - 1, 0, False
    return depth - 1, 0, True


def fast_strict_json(body: bytes, max_depth: int, max_items: int) -> Any | None:
    """The strict parse of a small, ordinary body at C speed, or None to take the careful path.

    Sound by construction: orjson accepts only RFC 8259 JSON (valid UTF-8, no NaN/Infinity);
    what it cannot vouch for is handed to the careful path: any float (orjson reads an
    integer beyond 64 bits, or 1e400, as a float, where the careful path keeps the integer or
    refuses the infinity). A body no longer than
    ``max_items`` cannot hold more values than that. Duplicate keys: every key in the text is
    followed by a colon, so when the body holds exactly as many colons as the parsed objects
    hold keys, no key was repeated (colons inside strings only make it fall back).
    """
    if len(body) > max_items or len(body) > FAST_PARSE_BYTES:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    depth, keys, no_float = _measure(obj)
    if depth > max_depth or not no_float or body.count(b":") != keys:
        return None
    return obj


def parse_strict_json(body: bytes) -> Any:
    """RFC 8259 JSON only: UTF-8, no NaN/Infinity, no duplicate keys; else InvalidJson."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise E.InvalidJson("request body is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constants, parse_float=_finite)
    except _DuplicateKey as exc:
        raise E.InvalidJson(f"duplicate key {exc.args[0]!r} in a JSON object") from None
    except RecursionError:
        raise E.InvalidJson("JSON nested too deeply") from None
    except ValueError:
        raise E.InvalidJson() from None


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


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def accepts_json_and_sse(value: str | None) -> bool:
    types = {media_type(part) for part in (value or "").split(",")}
    wildcard = "*/*" in types
    has_json = wildcard or bool(types & {"application/json", "application/*"})
    has_sse = wildcard or bool(types & {"text/event-stream", "text/*"})
    return has_json and has_sse


def all_headers(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope["headers"] if k == name]


# -- capacity: SSE streams and sessions, per principal and in total -------------------------
class SessionTicket:
    """A new handshake-era session being opened; kept once the response names its id."""

    def __init__(self, limits: CapacityLimits, principal: str) -> None:
        self.limits = limits
        self.principal = principal
        self.done = False

    def opened(self, session_id: str) -> None:
        self.limits.sessions.setdefault(self.principal, set()).add(session_id)

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.limits.end_pending(self.principal)


class CapacityLimits:
    """Open SSE streams and Streamable HTTP sessions, counted per principal and in total.

    Streams: GET /sse (a legacy session) and GET /mcp (a session's standalone stream);
    over the per-principal cap -> 429, over the total -> 503, both with Retry-After. A
    handshake-era session is counted from the request that opens it; the SDK's session
    manager (``live_sessions``) says which ids are still alive. Its own ``max_sessions``
    answers 503 for the total.
    """

    RETRY_AFTER_S = 5

    def __init__(self, *, max_sse_streams: int, max_sse_streams_per_principal: int,
                 max_sessions_per_principal: int, live_sessions: Callable[[], Container[str]] | None) -> None:
        self.max_sse_streams = max_sse_streams
        self.max_sse_streams_per_principal = max_sse_streams_per_principal
        self.max_sessions_per_principal = max_sessions_per_principal
        self.live_sessions = live_sessions
        self.streams: dict[str, int] = {}
        self.total_streams = 0
        self.sessions: dict[str, set[str]] = {}
        self.pending: dict[str, int] = {}
        self._admitted = 0

    def open_stream(self, principal: str) -> Callable[[], None]:
        if self.total_streams >= self.max_sse_streams:
            raise E.ServiceUnavailable("too many open SSE streams", retry_after=self.RETRY_AFTER_S,
                                       limit=self.max_sse_streams)
        if self.streams.get(principal, 0) >= self.max_sse_streams_per_principal:
            raise E.RateLimited("too many open SSE streams for this principal", retry_after=self.RETRY_AFTER_S,
                                limit=self.max_sse_streams_per_principal)
        self.streams[principal] = self.streams.get(principal, 0) + 1
        self.total_streams += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.total_streams -= 1
            left = self.streams.get(principal, 1) - 1
            if left > 0:
                self.streams[principal] = left
            else:
                self.streams.pop(principal, None)

        return release

    def open_session(self, principal: str) -> SessionTicket:
        live = self.live_sessions() if self.live_sessions is not None else None
        self._admitted += 1
        if live is not None and self._admitted % 256 == 0:
            self.prune(live)
        owned = self.sessions.get(principal, set())
        if live is not None:
            owned = {sid for sid in owned if sid in live}
        if owned:
            self.sessions[principal] = owned
        else:
            self.sessions.pop(principal, None)
        if len(owned) + self.pending.get(principal, 0) >= self.max_sessions_per_principal:
            raise E.RateLimited("too many open sessions for this principal: end one (DELETE) or let it expire",
                                retry_after=self.RETRY_AFTER_S, limit=self.max_sessions_per_principal)
        self.pending[principal] = self.pending.get(principal, 0) + 1
        return SessionTicket(self, principal)

    def end_pending(self, principal: str) -> None:
        left = self.pending.get(principal, 1) - 1
        if left > 0:
            self.pending[principal] = left
        else:
            self.pending.pop(principal, None)

    def prune(self, live: Container[str]) -> None:
        for principal in list(self.sessions):
            kept = {sid for sid in self.sessions[principal] if sid in live}
            if kept:
                self.sessions[principal] = kept
            else:
                del self.sessions[principal]


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


class FrontDoor:
    def __init__(
        self,
        *,
        rest_app: ASGIApp,
        streamable: ASGIApp,
        stateless: ASGIApp,
        sse_connect: ASGIApp,
        sse_post: ASGIApp,
        authenticator: Any,
        policy: HostOriginPolicy,
        max_body_bytes: int,
        read_timeout_s: float,
        capacity: CapacityLimits | None = None,
        max_json_depth: int = MAX_JSON_DEPTH,
        max_json_items: int = MAX_JSON_ITEMS,
    ) -> None:
        self.rest_app = rest_app
        self.streamable = streamable
        self.stateless = stateless
        self.fastpath: Any = None
        self.sse_connect = sse_connect
        self.sse_post = sse_post
        self.authenticator = authenticator
        self.policy = policy
        self.max_body_bytes = max_body_bytes
        self.read_timeout_s = read_timeout_s
        self.max_json_depth = max_json_depth
        self.max_json_items = max_json_items
        self._users: dict[str, AuthenticatedUser] = {}
        self.capacity = capacity or CapacityLimits(
            max_sse_streams=1_000, max_sse_streams_per_principal=20, max_sessions_per_principal=100,
            live_sessions=None,
        )

    def route(self, path: str) -> tuple[ASGIApp, Transport | None]:
        if path in MCP_PATHS:
            return self.streamable, Transport.STREAMABLE_HTTP
        if path == STATELESS_PATH:
            return self.stateless, Transport.STREAMABLE_HTTP
        if path == SSE_PATH:
            return self.sse_connect, Transport.SSE
        if path == MESSAGES_PREFIX or path.startswith(MESSAGES_PREFIX + "/"):
            return self.sse_post, Transport.SSE
        return self.rest_app, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.rest_app(scope, receive, send)
            return
        app, transport = self.route(scope["path"])
        is_mcp = transport is not None
        request_id = self.request_id_of(scope)
        release: Callable[[], None] | None = None
        try:
            self.check_host_origin(scope)
            if is_mcp:
                assert transport is not None
                await self.authenticate(scope, transport)
                request_id = scope[SCOPE_KEY].request_id
                self.check_mcp_request(scope)
            replayed = await self.buffer_body(scope, receive)
            await self.check_body(scope, is_mcp)
            fast = transport is Transport.STREAMABLE_HTTP and self.fastpath is not None and MESSAGE_KEY in scope
            if fast and await self.fastpath.try_handle(scope, receive, send):
                return  # answered whole by the fast path, in the final wire form
            if is_mcp:
                send, release = self.admit(scope, send, request_id)
        except E.NorthstarError as err:
            await send_error(send, err, request_id, jsonrpc=is_mcp, status=self.status_for(err),
                             close=BODY_KEY not in scope and self.has_body(scope))
            return
        try:
            scope.pop(BODY_KEY, None)
            await app(scope, replayed, send)
        finally:
            if release is not None:
                release()

    @staticmethod
    def has_body(scope: Scope) -> bool:
        """Whether the request declares a body (which an early answer leaves unread)."""
        length = header(scope, b"content-length")
        return header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() != "0")

    def check_mcp_request(self, scope: Scope) -> None:
        """Method, media types and protocol version of a request to an MCP path (405/415/406/400)."""
        method, path = scope["method"], scope["path"]
        if path == SSE_PATH:
            if method != "GET":
                raise E.MethodNotAllowed("the SSE stream is opened with GET", allow="GET")
        elif path == MESSAGES_PREFIX or path.startswith(MESSAGES_PREFIX + "/"):
            if method != "POST":
                raise E.MethodNotAllowed("messages are sent with POST", allow="POST")
        elif method not in MCP_METHODS:
            raise E.MethodNotAllowed(f"{method} is not allowed on {path}", allow=", ".join(MCP_METHODS))
        versions = all_headers(scope, b"mcp-protocol-version")
        if len(versions) > 1:
            raise InvalidRequest("mcp-protocol-version was sent more than once", header="mcp-protocol-version")
        if versions and versions[0] not in SUPPORTED_PROTOCOL_VERSIONS:
            raise UnsupportedProtocolVersion(
                f"Unsupported protocol version {versions[0][:64]!r}; supported: "
                + ", ".join(SUPPORTED_PROTOCOL_VERSIONS),
                requested=versions[0][:64], supported=list(SUPPORTED_PROTOCOL_VERSIONS),
            )
        if method != "POST":
            return
        if media_type(header(scope, b"content-type")) != "application/json":
            raise E.UnsupportedMediaType("send Content-Type: application/json")
        accept = header(scope, b"accept")
        if path in MCP_PATHS and not accepts_json_and_sse(accept):
            raise NotAcceptable("accept both application/json and text/event-stream")
        if path == STATELESS_PATH and not {"application/json", "application/*", "*/*"} & {
            media_type(part) for part in (accept or "").split(",")
        }:
            raise NotAcceptable("accept application/json")

    async def check_body(self, scope: Scope, is_mcp: bool) -> None:
        """An MCP body must be one JSON-RPC message; a JSON REST body must be strict JSON."""
        body = scope.get(BODY_KEY)
        if body is None:
            return
        if is_mcp:
            check: Callable[..., Any] = check_mcp_body
        elif body and media_type(header(scope, b"content-type")) == "application/json":
            check = check_rest_json
        else:
            return
        if len(body) > PARSE_IN_THREAD_BYTES:
            parsed = await trio.to_thread.run_sync(check, body, self.max_json_depth, self.max_json_items)
        else:
            parsed = check(body, self.max_json_depth, self.max_json_items)
        if is_mcp:
            scope[MESSAGE_KEY] = parsed

    def admit(self, scope: Scope, send: Send, request_id: str) -> tuple[Send, Callable[[], None] | None]:
        """Count an SSE stream or a new session against the caps (429 / 503), wrap ``send``."""
        principal = scope[SCOPE_KEY].principal
        method, path = scope["method"], scope["path"]
        version = header(scope, b"mcp-protocol-version")
        if method == "GET" and (path == SSE_PATH or path in MCP_PATHS):
            return McpAnswers(send, request_id), self.capacity.open_stream(principal)
        if (method == "POST" and path in MCP_PATHS and header(scope, b"mcp-session-id") is None
                and (version is None or version in HANDSHAKE_PROTOCOL_VERSIONS)):
            ticket = self.capacity.open_session(principal)
            return McpAnswers(send, request_id, ticket), ticket.release
        return McpAnswers(send, request_id), None

    @staticmethod
    def status_for(err: E.NorthstarError) -> int:
        return 421 if isinstance(err, MisdirectedRequest) else err.http_status

    @staticmethod
    def request_id_of(scope: Scope) -> str:
        rid = header(scope, REQUEST_ID_HEADER.encode())
        if rid and 0 < len(rid) <= 128 and rid.isascii() and rid.isprintable():
            return rid
        return new_request_id()

    def check_host_origin(self, scope: Scope) -> None:
        if not self.policy.host_ok(header(scope, b"host")):
            raise MisdirectedRequest("Invalid Host header")
        if not self.policy.origin_ok(header(scope, b"origin")):
            raise E.Forbidden("Invalid Origin header", reason="origin")

    async def buffer_body(self, scope: Scope, receive: Receive) -> Receive:
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return receive
        length = header(scope, b"content-length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > self.max_body_bytes:
            raise E.PayloadTooLarge(limit=self.max_body_bytes)
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.read_timeout_s) as deadline:
                body, _ = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            raise E.PayloadTooLarge(limit=self.max_body_bytes) from None
        if deadline.cancelled_caught:
            raise E.RequestTimeout(timeout_s=self.read_timeout_s)
        scope[BODY_KEY] = body
        return replay(body, receive)

    async def authenticate(self, scope: Scope, transport: Transport) -> None:
        ctx = await self.authenticator.authenticate(decoded_headers(scope), transport)
        scope[SCOPE_KEY] = ctx
        user = self._users.get(ctx.principal)
        if user is None:  # immutable: one per principal will do (bounded: cleared when full)
            if len(self._users) >= 10_000:
                self._users.clear()
            user = self._users[ctx.principal] = AuthenticatedUser(
                AccessToken(token="-", client_id=ctx.principal, scopes=[])
            )
        scope["user"] = user


class MisdirectedRequest(E.BadRequest):
    code = "misdirected_request"
    default_message = "Invalid Host header"
