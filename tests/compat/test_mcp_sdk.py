"""The MCP SDK's internals that ``northstar.compat.mcp_sdk`` relies on still behave as verified:
who names sessions, the session table and its owner rule, the connection behind a handler's
session, and the bytes of the stdio answer."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from mcp.server import Server
from mcp.server.auth.middleware.bearer_auth import authorization_context
from mcp.server.connection import Connection
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from northstar.compat import mcp_sdk
from tests.compat.asgi import INITIALIZE, PING, Response, call, mcp_headers, receive_of, scope_of, user

ALICE, BOB = user("alice"), user("bob")


def test_the_installed_sdk_is_the_verified_one() -> None:
    problems = mcp_sdk.unverified()
    assert not problems, "\n".join(problems)
    assert mcp_sdk.sdk_is_verified()


def test_importing_the_module_loads_nothing_of_the_sdk() -> None:
    """The stdio door asks whether the SDK is verified before the SDK is imported."""
    code = "import sys, northstar.compat.mcp_sdk; print(sorted(m for m in ('mcp', 'mcp_types') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def counted_ids() -> Iterator[Callable[[], uuid.UUID]]:
    """Session ids 1, 2, 3 ... for the duration of a test, then the generator that was there."""
    previous = mcp_sdk.session_id_generator()
    numbers = itertools.count(1)

    def generator() -> uuid.UUID:
        return uuid.UUID(int=next(numbers))

    mcp_sdk.use_random_session_ids(generator)
    try:
        yield generator
    finally:
        mcp_sdk.use_random_session_ids(previous)


async def open_session(manager: StreamableHTTPSessionManager, principal: Any) -> str:
    response = await call(manager.handle_request, "POST", "/mcp", body=INITIALIZE, headers=mcp_headers(),
                          principal=principal)
    assert response.status == 200, response.body
    return response.headers["mcp-session-id"]


async def test_streamable_sessions_are_named_by_the_installed_generator(counted_ids: Any) -> None:
    manager = StreamableHTTPSessionManager(Server("t"), json_response=True)
    async with manager.run():
        assert await open_session(manager, ALICE) == uuid.UUID(int=1).hex
        assert await open_session(manager, ALICE) == uuid.UUID(int=2).hex


async def test_legacy_sse_sessions_are_named_by_the_installed_generator(counted_ids: Any) -> None:
    transport = SseServerTransport("/messages/")
    response = Response()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def stream() -> None:
                async with transport.connect_sse(scope_of("GET", "/sse", principal=ALICE), receive_of(b""),
                                                 response.send):
                    await trio.sleep_forever()

            nursery.start_soon(stream)
            await response.wait_for(b"session_id=")
            nursery.cancel_scope.cancel()
    assert f"session_id={uuid.UUID(int=1).hex}".encode() in response.body


def test_the_default_generator_uses_all_128_bits() -> None:
    ids = [mcp_sdk.random_uuid().hex for _ in range(64)]
    assert len({sid[12] for sid in ids}) > 1  # uuid4 always has 4 here
    assert {sid[16] for sid in ids} - set("89ab")  # and one of these here


def test_a_changed_sdk_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp.server import sse

    monkeypatch.delattr(sse, "uuid4")
    with pytest.raises(mcp_sdk.IncompatibleLibrary, match=re.escape(f"verified against mcp {mcp_sdk.VERIFIED['mcp']}")):
        mcp_sdk.use_random_session_ids()


async def test_the_session_table_and_its_owner_rule_are_the_sdks() -> None:
    manager = StreamableHTTPSessionManager(Server("t"), json_response=True)
    async with manager.run():
        sid = await open_session(manager, ALICE)
        assert sid in mcp_sdk.live_sessions(manager) and mcp_sdk.session_count(manager) == 1
        assert mcp_sdk.session_open_for(manager, sid, ALICE)
        assert not mcp_sdk.session_open_for(manager, sid, BOB)
        assert not mcp_sdk.session_open_for(manager, sid, None)
        assert not mcp_sdk.session_open_for(manager, "0" * 32, ALICE)
        # The SDK agrees: it serves Alice's session to Alice only.
        for principal, status in ((ALICE, 200), (BOB, 404)):
            answer = await call(manager.handle_request, "POST", "/mcp", body=PING, headers=mcp_headers(sid),
                                principal=principal)
            assert answer.status == status, answer.body
        ended = await call(manager.handle_request, "DELETE", "/mcp", headers=mcp_headers(sid), principal=ALICE)
        assert ended.status == 200
        assert not mcp_sdk.session_open_for(manager, sid, ALICE)
        assert mcp_sdk.session_count(manager) == 0 and sid not in mcp_sdk.live_sessions(manager)


TOKENS = [{}, {"subject": "s1"}, {"subject": "s2"}, {"claims": {"iss": "https://a.test"}},
          {"claims": {"iss": "https://b.test"}, "subject": "s1"}, {"claims": {}}, {"claims": {"iss": 7}}]
USERS = [user(principal, **token) for principal in ("alice", "bob") for token in TOKENS]


def test_same_principal_is_the_sdks_authorization_context_rule() -> None:
    owners = [None, *(authorization_context(u) for u in USERS)]
    for owner, requestor in itertools.product(owners, [None, *USERS]):
        expected = owner == (authorization_context(requestor) if requestor is not None else None)
        assert mcp_sdk.same_principal(owner, requestor) is expected, (owner, requestor)


async def test_connection_of_is_the_connection_of_the_session() -> None:
    seen: list[tuple[str | None, Any]] = []
    server: Server[Any] = Server("t")

    async def remember(ctx: Any, call_next: Any) -> Any:
        seen.append((ctx.method, mcp_sdk.connection_of(ctx.session)))
        return await call_next(ctx)

    server.middleware.append(remember)
    manager = StreamableHTTPSessionManager(server, json_response=True)
    async with manager.run():
        first, second = await open_session(manager, ALICE), await open_session(manager, ALICE)
        for sid in (first, first, second):
            answer = await call(manager.handle_request, "POST", "/mcp", body=PING, headers=mcp_headers(sid),
                                principal=ALICE)
            assert answer.status == 200, answer.body
    connections = [connection for method, connection in seen if method == "ping"]
    assert all(isinstance(c, Connection) for c in connections), connections
    assert connections[0] is connections[1] and connections[1] is not connections[2]
    assert mcp_sdk.connection_of(object()) is None


def test_the_stdio_line_is_the_sdks() -> None:
    """The SDK's own writer, for the result its runner makes of an ``InitializeResult``; the
    whole early answer is compared with a real SDK session in tests/mcp_gateway/test_stdio_handshake.py."""
    import mcp_types as types
    from mcp_types import methods

    result = types.InitializeResult(
        protocol_version="2025-06-18", instructions="é ✨",
        capabilities=types.ServerCapabilities(tools=types.ToolsCapability(list_changed=True)),
        server_info=types.Implementation(name="n", title="t", version="1", description="d"),
    ).model_dump(by_alias=True, mode="json", exclude_none=True)
    shaped = methods.serialize_server_result("initialize", "2025-06-18", result)
    for rpc_id in (0, 7, "abc"):
        sdk = types.JSONRPCResponse(jsonrpc="2.0", id=rpc_id, result=shaped).model_dump_json(
            by_alias=True, exclude_unset=True) + "\n"
        assert mcp_sdk.stdio_result_line(rpc_id, shaped) == sdk.encode()
