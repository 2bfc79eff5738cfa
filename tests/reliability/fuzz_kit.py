"""What the fuzz suites share: a gateway with API keys, Hypothesis strategies for hostile
JSON-RPC, the pass criteria, and the count of inputs each door got.

Pass criteria, for every generated input on every door: no HTTP status >= 500, the process
never exits, every REST error body is the canonical envelope, every JSON-RPC error carries a
non-zero integer ``code`` (and over HTTP the envelope in ``error.data``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.harness import GatewayProcess, northstar_cli
from tests.reliability.kit import BASE_ENV, META, assert_rpc_error, reply_of

EXAMPLES = int(os.environ.get("NORTHSTAR_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
COUNTS: dict[str, int] = {}  # inputs sent, per door
TENANT, USER = "fuzz", "alice"


def count(door: str, n: int = 1) -> None:
    COUNTS[door] = COUNTS.get(door, 0) + n


# -- a gateway with API keys ----------------------------------------------------------------------
def make_key(data_dir: Path, tenant: str, user: str, *, admin: bool = False) -> str:
    """A key made with ``northstar keys create`` against the data directory (before the gateway starts)."""
    out = northstar_cli(data_dir, "keys", "create", "--tenant", tenant, "--user", user, *(["--admin"] if admin else []))
    assert out.returncode == 0, out.stderr
    key: str = json.loads(out.stdout)["key"]
    return key


@contextmanager
def keyed_gateway(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    """``northstar serve`` in API-key mode with an admin key and a user key (``TENANT``/``USER``)."""
    keys = {"admin": make_key(data_dir, TENANT, "root", admin=True), "user": make_key(data_dir, TENANT, USER)}
    with GatewayProcess(data_dir, env={**BASE_ENV, "NORTHSTAR_AUTH_MODE": "api_key", **(env or {})}) as gw:
        yield gw, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- strategies ------------------------------------------------------------------------------------
# Numbers of every size JSON can carry: past int64 and uint64, and floats at the edge of range.
# (Hypothesis leans to the first choices of a sampled_from or a `|`: the most hostile come first.)
huge_ints = st.sampled_from([2**64, 2**63, -(2**63) - 1, 10**30, 2**64 - 1, 2**63 - 1, -(10**30), 2**53 + 1,
                             2**53, 2**31])
numbers = st.integers() | st.integers(-(2**80), 2**80) | huge_ints \
    | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0])
scalars = st.none() | st.booleans() | numbers | st.text(max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)
# ids of every JSON type and size; integers at the int64 / uint64 edges come up often
ids = huge_ints | st.integers(-(2**80), 2**80) | numbers | st.text(max_size=20) \
    | st.text(min_size=100, max_size=2000) | st.none() | st.booleans() | st.lists(scalars, max_size=3) \
    | st.dictionaries(st.text(max_size=5), scalars, max_size=3)

REQUESTS = ["initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
            "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list", "prompts/get",
            "server/discover", "completion/complete", "logging/setLevel", "subscriptions/listen", "tasks/get",
            "tasks/list", "tasks/cancel", "tasks/result", "roots/list", "sampling/createMessage", "elicitation/create"]
NOTIFICATIONS = ["notifications/initialized", "notifications/cancelled", "notifications/progress",
                 "notifications/roots/list_changed", "notifications/message", "notifications/tools/list_changed"]
METHODS = REQUESTS + NOTIFICATIONS + ["nope", "", "tools/", "TOOLS/LIST", "rpc.discover"]
TOOLS = ["echo__ping", "echo.ping", "media_v2__create_asset", "media_v2__get_asset", "media_v2__list_assets",
         "media_v2__delete_asset", "diagnostics__sleep", "no__such", "", "a" * 300]
arguments = st.dictionaries(st.sampled_from(["message", "data", "name", "mime_type", "content_text", "tags",
                                             "asset_id", "limit", "cursor", "seconds", "x"]), json_values, max_size=5)


@st.composite
def params_for(draw: st.DrawFn, method: str) -> Any:
    """Params shaped for ``method`` (each value sometimes of the wrong type), or anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    value = json_values if draw(st.integers(0, 3)) == 0 else None
    shapes: dict[str, dict[str, Any]] = {
        "tools/call": {"name": st.sampled_from(TOOLS) | st.text(max_size=20), "arguments": arguments},
        "initialize": {"protocolVersion": st.sampled_from(["2025-06-18", "2025-03-26", "2024-11-05", "2026-07-28",
                                                           "1999-01-01"]),
                       "capabilities": st.just({}), "clientInfo": st.just({"name": "fuzz", "version": "1"})},
        "resources/read": {"uri": st.sampled_from(["northstar://assets/x", "file:///etc/passwd", "", "x" * 500])},
        "notifications/cancelled": {"requestId": ids, "reason": st.text(max_size=20)},
        "notifications/progress": {"progressToken": ids, "progress": numbers, "total": numbers},
        "logging/setLevel": {"level": st.sampled_from(["debug", "info", "emergency", "nope"])},
        "completion/complete": {"ref": st.just({"type": "ref/prompt", "name": "x"}),
                                "argument": st.just({"name": "a", "value": "b"})},
        "tasks/get": {"taskId": ids}, "tasks/cancel": {"taskId": ids}, "tasks/result": {"taskId": ids},
    }
    shape = shapes.get(method, {"cursor": st.text(max_size=10) | numbers})
    params = {k: draw(value if value is not None else v) for k, v in shape.items() if draw(st.integers(0, 5))}
    if draw(st.booleans()):
        params["_meta"] = draw(st.sampled_from([META, {"progressToken": draw(ids)}, {"x": draw(json_values)}]))
    return params


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """A JSON-RPC message with something wrong or unusual: ids of every type and size, wrong
    params, unknown methods, notifications, responses; sometimes any JSON value at all."""
    if draw(st.integers(0, 14)) == 0:
        return draw(json_values)
    method = draw(st.sampled_from(METHODS) | st.text(max_size=30))
    msg: dict[str, Any] = {}
    if draw(st.integers(0, 7)):
        msg["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2, None]))
    if method not in NOTIFICATIONS or draw(st.integers(0, 4)) == 0:
        msg["id"] = draw(ids)
    if draw(st.integers(0, 9)):
        msg["method"] = method
    if draw(st.integers(0, 3)):
        msg["params"] = draw(params_for(method))
    if draw(st.integers(0, 8)) == 0:  # a response, or a request and a response in one
        msg[draw(st.sampled_from(["result", "error"]))] = draw(json_values | st.just({"code": 1, "message": "m"}))
    return msg


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request or notification of a method the gateway serves, with a hostile id."""
    method = draw(st.just("tools/call") | st.sampled_from(REQUESTS + NOTIFICATIONS))  # calls do the most
    params = draw(st.just({"name": "echo__ping", "arguments": {"message": "m"}, "_meta": META})
                  if method == "tools/call" and not draw(st.booleans()) else params_for(method))
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if method not in NOTIFICATIONS or draw(st.booleans()):
        msg["id"] = draw(huge_ints | ids)
    return msg


# Single messages (well-formed ones with hostile ids half the time, odd ones) and batches.
bodies = st.one_of(requests(), requests(), messages(), st.lists(requests() | messages(), min_size=0, max_size=4))


def method_and_name(msg: Any) -> tuple[Any, Any]:
    """The ``Mcp-Method`` / ``Mcp-Name`` a 2026-07-28 client would send for ``msg``."""
    method = msg.get("method") if isinstance(msg, dict) else None
    params = msg.get("params") if isinstance(msg, dict) else None
    return method, params.get("name") if isinstance(params, dict) else None


def header_safe(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isprintable() and 0 < len(value) <= 200


# -- the pass criteria -----------------------------------------------------------------------------
def assert_rpc_code(error: Any) -> None:
    """A JSON-RPC error object: a non-zero integer code and a message."""
    code = error.get("code") if isinstance(error, dict) else None
    assert isinstance(code, int) and not isinstance(code, bool) and code != 0, error
    assert isinstance(error.get("message"), str), error


def check_mcp_http(resp: httpx2.Response) -> None:
    """An answer on an MCP HTTP door: < 500; an error is a JSON-RPC error with the envelope in
    ``data``; a 2xx is a JSON-RPC reply (or a bare 202 for a notification or response)."""
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code >= 400:
        body = resp.json()
        assert_rpc_code(body["error"])
        assert_rpc_error(resp, resp.status_code, body["error"]["code"], rid=body.get("id"))
        return
    if resp.status_code == 202:
        assert resp.content == b""
        return
    assert resp.status_code == 200, resp.status_code
    reply = reply_of(resp)
    assert reply["jsonrpc"] == "2.0" and ("result" in reply) != ("error" in reply), reply
    if "error" in reply:
        assert_rpc_code(reply["error"])


def check_stream_messages(msgs: list[dict[str, Any]]) -> None:
    """Messages on a stream (legacy SSE, stdio): every error has a non-zero integer code."""
    for msg in msgs:
        assert msg.get("jsonrpc") == "2.0", msg
        if "error" in msg:
            assert_rpc_code(msg["error"])
