"""The northstar error hierarchy.

Every error the application raises on purpose is a :class:`NorthstarError`. Each class
carries a stable machine ``code`` (part of the public contract), the HTTP status it maps
to, and structured ``details``. Mapping to the wire (REST envelope, JSON-RPC error, MCP
``isError`` result) happens in exactly one place: :mod:`northstar.common.error_envelope`.

    NorthstarError                      500 internal_error
    ├── BadRequest                      400 bad_request
    │   ├── InvalidHeader               400 invalid_header        (details: header)
    │   ├── InvalidJson                 400 invalid_json          (JSON-RPC -32700)
    │   ├── InvalidRequest              400 invalid_request       (JSON-RPC -32600; carries the rpc id)
    │   ├── UnsupportedProtocolVersion  400 unsupported_protocol_version
    │   ├── MisdirectedRequest          421 misdirected_request   (a Host the gateway does not serve)
    │   └── ValidationFailed            400 validation_error      (details: errors[])
    ├── Unauthorized                    401 unauthorized
    ├── Forbidden                       403 forbidden
    │   ├── FirearmRequired             403 firearm_required      (details: scope, firearm)
    │   ├── AdminRequired               403 admin_required
    │   ├── IdentityMismatch            403 identity_mismatch     (details: header)
    │   ├── KeyNotConfirmed             403 key_not_confirmed     (details: key_id)
    │   ├── CsrfFailed                  403 csrf_failed           (a console cookie without its CSRF token)
    │   ├── PolicyDenied                403 policy_denied         (details: gate, reason)
    │   ├── ApprovalRejected            403 approval_rejected     (details: approval_id, reason)
    │   ├── ApprovalExpired             403 approval_expired      (details: approval_id, expires_at)
    │   └── ApprovalSelf                403 approval_self         (a caller deciding its own call)
    ├── NotFound                        404 not_found
    │   └── UnknownTool                 404 unknown_tool          (details: name)
    ├── MethodNotAllowed                405 method_not_allowed
    ├── NotAcceptable                   406 not_acceptable
    ├── RequestTimeout                  408 request_timeout
    ├── Conflict                        409 conflict              (details: current_version)
    │   ├── NameCollision               409 name_collision
    │   ├── UpstreamDrift               409 upstream_drift        (details: upstream, changed, removed, added)
    │   ├── ApprovalState               409 approval_state        (details: approval_id, state)
    │   └── ApprovalPending             409 approval_pending      (details: approval_id, expires_at; the call
    │                                                               is held: re-issue it once approved)
    ├── PayloadTooLarge                 413 payload_too_large     (details: limit)
    ├── UnsupportedMediaType            415 unsupported_media_type
    ├── Unprocessable                   422 unprocessable         (details: errors[])
    │   └── InvalidDefinition           422 invalid_definition
    ├── RateLimited                     429 rate_limited          (details: retry_after)
    ├── ToolFailed                      502 tool_error            (the tool itself failed)
    │   └── UpstreamFailed              502 upstream_error        (details: upstream; the upstream's own
    │                                                               error text, secrets redacted)
    ├── ServiceUnavailable              503 service_unavailable   (details: retry_after)
    │   ├── StoreUnavailable            503 store_unavailable
    │   ├── AuditUnavailable            503 audit_unavailable
    │   ├── PolicyUnavailable           503 policy_unavailable
    │   ├── SecretsUnavailable          503 secrets_unavailable
    │   └── UpstreamUnavailable         503 upstream_unavailable  (details: upstream, retry_after)
    └── ToolTimeout                     504 tool_timeout          (details: timeout_s)
        └── UpstreamTimeout             504 upstream_timeout      (details: upstream, timeout_s)

A test (``tests/common/test_errors_tree.py``) holds this picture to the classes: every
``NorthstarError`` subclass anywhere in ``northstar`` is defined here and drawn above.
"""

from __future__ import annotations

from typing import Any, ClassVar


class NorthstarError(Exception):
    """Base of every deliberate northstar error."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = {k: v for k, v in details.items() if v is not None}
        super().__init__(self.message)

    @property
    def retry_after(self) -> int | None:
        value = self.details.get("retry_after")
        return int(value) if value is not None else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(NorthstarError):
    code = "bad_request"
    http_status = 400
    default_message = "bad request"


class InvalidHeader(BadRequest):
    code = "invalid_header"
    default_message = "invalid header"


class InvalidJson(BadRequest):
    code = "invalid_json"
    default_message = "request body is not valid JSON"


def json_pointer(*parts: object) -> str:
    """A JSON pointer (RFC 6901) from path parts: ``("a", 0)`` -> ``"/a/0"``; none -> ``""``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def problem(item: Any, default_message: str) -> dict[str, Any]:
    """One ``errors[]`` entry as ``{"path": <JSON pointer>, "message": ..., **extras}``.

    Accepts what the layers below produce: ``{"path", "message"}`` (a pointer, or a
    slash-joined path without its leading slash), pydantic-style ``{"loc": [...], "msg"}``.
    """
    if not isinstance(item, dict):
        return {"path": "", "message": str(item)}
    extras = {k: v for k, v in item.items() if k not in ("path", "loc", "message", "msg")}
    if "loc" in item:
        loc = item["loc"]
        path = json_pointer(*(loc if isinstance(loc, list | tuple) else [loc]))
    else:
        path = str(item.get("path") or "")
        if path and not path.startswith("/"):
            path = "/" + path
    message = item.get("message") or item.get("msg") or default_message
    return {"path": path, "message": str(message), **extras}


class ValidationFailed(BadRequest):
    """The input does not fit: ``details.errors`` is always a non-empty list of problems,
    each ``{"path": <JSON pointer into the input>, "message": ...}``.

    ``field="name"`` is a shorthand for one problem at ``/name``.
    """

    code = "validation_error"
    default_message = "request validation failed"

    def __init__(self, message: str | None = None, *, field: str | None = None,
                 errors: list[Any] | None = None, **details: Any) -> None:
        text = message or self.default_message
        items = [problem(e, text) for e in errors or []]
        if not items:
            items = [{"path": json_pointer(field) if field else "", "message": text}]
        super().__init__(message, errors=items, **details)


class Unauthorized(NorthstarError):
    code = "unauthorized"
    http_status = 401
    default_message = "missing or invalid credentials"
    # The WWW-Authenticate challenge; with OAuth configured it names the resource metadata.
    www_authenticate: str = 'Bearer realm="northstar"'


class Forbidden(NorthstarError):
    code = "forbidden"
    http_status = 403
    default_message = "forbidden"


class FirearmRequired(Forbidden):
    code = "firearm_required"
    default_message = "this scope requires a firearm the caller has not been granted"


class AdminRequired(Forbidden):
    code = "admin_required"
    default_message = "this action requires the admin permission"


class PolicyDenied(Forbidden):
    code = "policy_denied"
    default_message = "denied by policy"


class NotFound(NorthstarError):
    code = "not_found"
    http_status = 404
    default_message = "not found"


class UnknownTool(NotFound):
    code = "unknown_tool"
    default_message = "unknown tool"


class MethodNotAllowed(NorthstarError):
    code = "method_not_allowed"
    http_status = 405
    default_message = "method not allowed"


class RequestTimeout(NorthstarError):
    code = "request_timeout"
    http_status = 408
    default_message = "request took too long to arrive"


class Conflict(NorthstarError):
    code = "conflict"
    http_status = 409
    default_message = "version conflict"


class NameCollision(Conflict):
    code = "name_collision"
    default_message = "name collides with an existing tool"


class UpstreamDrift(Conflict):
    """An upstream MCP server's tool definition no longer matches its pin (a rug pull, or an
    update nobody approved yet): the call is refused until the change is re-approved."""

    code = "upstream_drift"
    default_message = "the upstream tool changed since it was approved"


class PayloadTooLarge(NorthstarError):
    code = "payload_too_large"
    http_status = 413
    default_message = "request body too large"


class UnsupportedMediaType(NorthstarError):
    code = "unsupported_media_type"
    http_status = 415
    default_message = "unsupported media type"


class Unprocessable(NorthstarError):
    code = "unprocessable"
    http_status = 422
    default_message = "unprocessable entity"


class InvalidDefinition(Unprocessable):
    code = "invalid_definition"
    default_message = "invalid tool definition"


class RateLimited(NorthstarError):
    code = "rate_limited"
    http_status = 429
    default_message = "rate limit exceeded"


class ToolFailed(NorthstarError):
    code = "tool_error"
    http_status = 502
    default_message = "the tool failed"


class UpstreamFailed(ToolFailed):
    """An upstream MCP server answered a call with an error (or with a result northstar
    refuses: too large, not matching its output schema); the message carries the upstream's
    own error text with every known secret redacted."""

    code = "upstream_error"
    default_message = "the upstream MCP server failed"


class ServiceUnavailable(NorthstarError):
    code = "service_unavailable"
    http_status = 503
    default_message = "service unavailable"


class StoreUnavailable(ServiceUnavailable):
    code = "store_unavailable"
    default_message = "the store is unavailable"


class AuditUnavailable(ServiceUnavailable):
    code = "audit_unavailable"
    default_message = "the audit log is unavailable; the call was refused"


class UpstreamUnavailable(ServiceUnavailable):
    """An upstream MCP server cannot be reached: not connected, its circuit breaker is open,
    the connection dropped mid-call, or it is stopped."""

    code = "upstream_unavailable"
    default_message = "the upstream MCP server is unavailable"


class ToolTimeout(NorthstarError):
    code = "tool_timeout"
    http_status = 504
    default_message = "the tool call timed out"


class UpstreamTimeout(ToolTimeout):
    """An upstream MCP server did not answer within the call timeout; the call was cancelled
    upstream (``notifications/cancelled``)."""

    code = "upstream_timeout"
    default_message = "the upstream MCP server did not answer in time"


# -- the doors' and services' own codes, in the same tree -------------------------------------
class NotAcceptable(NorthstarError):
    code = "not_acceptable"
    http_status = 406
    default_message = "not acceptable"


class InvalidRequest(BadRequest):
    """Well-formed JSON that is not one valid JSON-RPC message (JSON-RPC -32600)."""

    code = "invalid_request"
    default_message = "not a valid JSON-RPC request"

    def __init__(self, message: str | None = None, *, rpc_id: Any = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.rpc_id = rpc_id


class UnsupportedProtocolVersion(BadRequest):
    code = "unsupported_protocol_version"
    default_message = "Unsupported protocol version"


class MisdirectedRequest(BadRequest):
    """A Host the gateway does not serve (DNS-rebinding protection): 421, not 400."""

    code = "misdirected_request"
    http_status = 421
    default_message = "Invalid Host header"


class IdentityMismatch(Forbidden):
    code = "identity_mismatch"
    default_message = "identity headers contradict the credential"


class KeyNotConfirmed(Forbidden):
    code = "key_not_confirmed"
    default_message = "this admin key is not honoured until an operator confirms it"


class CsrfFailed(Forbidden):
    """A state change made with the console's session cookie did not carry the session's CSRF token."""

    code = "csrf_failed"
    default_message = "the request did not carry the session's CSRF token"


class PolicyUnavailable(ServiceUnavailable):
    code = "policy_unavailable"
    default_message = "the policy store is unavailable; the call was refused"


class LimitsUnavailable(ServiceUnavailable):
    """The shared limits engine (Redis) cannot be reached and ``limits_fail`` is ``closed``."""

    code = "limits_unavailable"
    default_message = "the shared limits engine is unavailable; the call was refused"


class SecretsUnavailable(ServiceUnavailable):
    """The key file is missing, unreadable or does not match what was sealed (fail closed)."""

    code = "secrets_unavailable"
    default_message = "upstream secrets cannot be opened"


class ApprovalRejected(Forbidden):
    """An approver rejected the held call (``details.reason``, when given)."""

    code = "approval_rejected"
    default_message = "the call was rejected by an approver"


class ApprovalExpired(Forbidden):
    """Nobody approved the held call before its approval expired."""

    code = "approval_expired"
    default_message = "the call's approval expired before it was approved"


class ApprovalSelf(Forbidden):
    """A principal tried to approve or reject its own call."""

    code = "approval_self"
    default_message = "a caller cannot decide its own call"


class ApprovalState(Conflict):
    """An approval that is no longer in the state the step needs (``details.state``)."""

    code = "approval_state"
    default_message = "the approval is not pending"


class ApprovalPending(Conflict):
    """The call is held for approval; the door answers at once and the client re-issues it later."""

    code = "approval_pending"
    default_message = "the call is held until an approver approves it"
