"""The MCP SDK's internals the gateway depends on, in one pinned place.

Verified against ``mcp`` 2.3.0 and ``mcp-types`` 2.3.0 (:data:`VERIFIED`; ``pyproject.toml``
pins ``>=2.3,<2.4`` for both). Importing this module loads nothing from the SDK: the stdio
door asks :func:`sdk_is_verified` before the SDK is imported (it answers ``initialize``
first, see ``transports/stdio/handshake.py``). What is used, and why no public way exists:

* Session ids (:func:`use_random_session_ids`): the SDK names sessions with ``uuid4()``,
  122 random bits; the gateway wants all 128 (an unguessable id is the session's only key).
  ``StreamableHTTPSessionManager`` and ``SseServerTransport`` take no id generator, and the
  id is made inside ``StreamableHTTPSessionManager._admit_session`` and
  ``SseServerTransport.connect_sse``, so the module global ``uuid4`` of
  ``mcp.server.streamable_http_manager`` and of ``mcp.server.sse`` is replaced (checked: it
  must be there to replace). Both only call ``uuid4()`` and use the result as a ``UUID``
  (``.hex``; the SSE transport parses it back with ``UUID(hex=...)``).
* The session table of ``StreamableHTTPSessionManager``: ``_server_instances`` (session id ->
  transport; :func:`live_sessions`, :func:`session_open_for`) and ``_session_owners``
  (session id -> the ``AuthorizationContext`` of the credential that opened it). The manager
  publishes neither a lookup nor a count; the front door counts sessions per principal and
  the fast path serves a session's ``tools/call`` itself, so both must know whether a session
  is alive and whose it is. The owner rule is the SDK's own (``authorization_context`` of the
  request's user must equal the stored one), evaluated here without allocating
  (:func:`same_principal`; a test compares it with ``authorization_context``). The
  transport's ``is_terminated`` is public.
* ``ServerSession._connection`` (:func:`connection_of`): a handler sees a per-request
  ``ServerSession``; to send ``notifications/tools/list_changed`` later (when the catalogue
  changes), the gateway keeps the connection-scoped ``Connection`` it wraps, weakly. The
  public ``Context.connection`` exists, but the low-level server hands handlers a
  ``ServerRequestContext``, which has no connection; holding the per-request session instead
  would keep every ended request alive.
* The bytes of the stdio transport's answer (:func:`stdio_result_line`): not a private name
  but a behaviour, and the stdio door's early ``initialize`` answer must equal it byte for
  byte. It is given only under the verified versions (:func:`sdk_is_verified`).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from northstar.compat.versions import IncompatibleLibrary, installed, mismatches

#: The SDK distributions this module (and the stdio door's early answer) was verified against.
VERIFIED = {"mcp": "2.3.0", "mcp-types": "2.3.0"}


def unverified() -> list[str]:
    """Why the installed SDK is not the verified one (empty when it is)."""
    return mismatches(VERIFIED, __name__)


def sdk_is_verified() -> bool:
    return all(installed(dist) == version for dist, version in VERIFIED.items())


# -- session ids ------------------------------------------------------------------------------
def random_uuid() -> uuid.UUID:
    """A UUID made of 128 random bits (``uuid4`` fixes 6 of them): unguessable session ids."""
    return uuid.UUID(bytes=secrets.token_bytes(16))


def use_random_session_ids(generator: Callable[[], uuid.UUID] = random_uuid) -> None:
    """Make the SDK's Streamable HTTP and legacy SSE transports name sessions with ``generator``."""
    from mcp.server import sse as sdk_sse
    from mcp.server import streamable_http_manager as sdk_manager

    for module in (sdk_manager, sdk_sse):
        if not callable(getattr(module, "uuid4", None)):
            raise IncompatibleLibrary(f"{module.__name__} no longer makes session ids with uuid4", __name__, VERIFIED)
    sdk_manager.uuid4 = generator  # type: ignore[attr-defined]
    sdk_sse.uuid4 = generator  # type: ignore[attr-defined]


def session_id_generator() -> Callable[[], uuid.UUID]:
    """What the SDK's Streamable HTTP transport names sessions with now."""
    from mcp.server import streamable_http_manager as sdk_manager

    generator: Callable[[], uuid.UUID] = sdk_manager.uuid4  # type: ignore[attr-defined]
    return generator


# -- the Streamable HTTP session table --------------------------------------------------------
def live_sessions(manager: Any) -> Mapping[str, Any]:
    """The manager's open sessions, by id (a live view: read it, never change it)."""
    sessions: Mapping[str, Any] = manager._server_instances
    return sessions


def session_count(manager: Any) -> int:
    return len(manager._server_instances)


def session_open_for(manager: Any, session_id: str, user: Any) -> bool:
    """Whether ``session_id`` is a live session the SDK would serve for ``user`` (``scope["user"]``)."""
    transport = manager._server_instances.get(session_id)
    if transport is None or transport.is_terminated:
        return False
    return same_principal(manager._session_owners.get(session_id), user)


def same_principal(owner: Mapping[str, Any] | None, user: Any) -> bool:
    """The SDK's session-owner rule, ``owner == authorization_context(user)``, without allocating.

    ``user`` is what the front door puts in ``scope["user"]`` (an ``AuthenticatedUser``, whose
    ``access_token`` names the principal) or None. The SDK's triple is the token's
    ``client_id``, the ``iss`` claim as a string, and ``subject``.
    """
    token = getattr(user, "access_token", None)
    if owner is None or token is None:
        return owner is None and token is None
    if owner["client_id"] != token.client_id or owner["subject"] != token.subject:
        return False
    claims = token.claims
    if not claims:  # the gateway's own tokens: no claims, no issuer
        return owner["issuer"] is None
    issuer = claims.get("iss")
    return bool(owner["issuer"] == (None if issuer is None else str(issuer)))


# -- connections ------------------------------------------------------------------------------
def connection_of(session: Any) -> Any | None:
    """The connection-scoped ``Connection`` behind a handler's ``ctx.session`` (None if there is none)."""
    return getattr(session, "_connection", None)


# -- the stdio transport's bytes --------------------------------------------------------------
def stdio_result_line(rpc_id: int | str, result: Mapping[str, Any]) -> bytes:
    """The line the SDK's stdio transport writes for a JSON-RPC result it produced itself.

    Its writer is ``JSONRPCResponse.model_dump_json(by_alias=True, exclude_unset=True)`` and a
    newline: compact separators, non-ASCII characters as they are, ``jsonrpc``, ``id`` and
    ``result`` in that order; the result's keys, as its runner shapes an ``InitializeResult``,
    come out sorted at every level.
    """
    body = json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f'{{"jsonrpc":"2.0","id":{json.dumps(rpc_id)},"result":{body}}}\n'.encode()
