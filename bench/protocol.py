"""The MCP requests the suite times, how a flow is prepared, and the correctness check.

Three flows call ``tools/call`` of ``echo__ping`` with ``{"message": "hi"}``:

* ``session-2025``  a Streamable HTTP session opened with ``initialize`` (2025-11-25) and
                    ``notifications/initialized``; calls carry ``Mcp-Session-Id``;
* ``stateless``     no session (the gateway's ``/mcp/stateless``; the baseline started with
                    ``--stateless``);
* ``modern-2026``   the 2026-07-28 per-request protocol: routing headers and ``params._meta``.

A server may answer JSON or SSE (the SDK's default: ``data: {...}`` lines); both are parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx2

FLOWS = ("session-2025", "stateless", "modern-2026")
#: The paths of the federation section (``bench/upstream.py``), in the order of its tables.
#: In the order each round measures them: ``direct-paced`` takes its pace from the round's ``northstar``.
UPSTREAM_KINDS = ("direct", "relay", "northstar", "direct-paced", "northstar-local", "contextforge")
HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
TOOL = "echo__ping"
ARGUMENTS = {"message": "hi"}
CLIENT_INFO = {"name": "northstar-bench", "version": "1"}
ACCEPT = "application/json, text/event-stream"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    "io.modelcontextprotocol/clientCapabilities": {},
}


class CheckFailed(RuntimeError):
    """A server answered something other than a correct result; the message quotes both sides."""


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass(frozen=True)
class CallRequest:
    """One ``tools/call`` as sent: the body is ``prefix + <id> + suffix`` so each id is unique."""

    path: str
    headers: dict[str, str]
    params: dict[str, Any]

    @property
    def body_prefix(self) -> str:
        return '{"jsonrpc":"2.0","id":'

    @property
    def body_suffix(self) -> str:
        return "," + compact({"method": "tools/call", "params": self.params})[1:]

    def body(self, request_id: int) -> str:
        return f"{self.body_prefix}{request_id}{self.body_suffix}"


def base_headers(version: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Accept": ACCEPT, "MCP-Protocol-Version": version}


def modern_request(path: str = "/mcp") -> CallRequest:
    headers = {**base_headers(MODERN), "Mcp-Method": "tools/call", "Mcp-Name": TOOL}
    return CallRequest(path, headers, {"name": TOOL, "arguments": ARGUMENTS, "_meta": MODERN_META})


def stateless_request(path: str) -> CallRequest:
    return CallRequest(path, base_headers(HANDSHAKE), {"name": TOOL, "arguments": ARGUMENTS})


def session_request(session_id: str) -> CallRequest:
    headers = {**base_headers(HANDSHAKE), "Mcp-Session-Id": session_id}
    return CallRequest("/mcp", headers, {"name": TOOL, "arguments": ARGUMENTS})


# -- decoding and checking ------------------------------------------------------------------
def messages(response: httpx2.Response) -> list[Any]:
    """The JSON-RPC messages in a response, JSON or SSE framed."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        return sse_messages(response.text)
    if not response.content:
        return []
    return [response.json()]


def sse_messages(text: str) -> list[Any]:
    out: list[Any] = []
    data: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            out.append(json.loads("\n".join(data)))
            data = []
    return out


def describe(response: httpx2.Response) -> str:
    req = response.request
    req_headers = "\n".join(f"  {k}: {v}" for k, v in req.headers.items())
    resp_headers = "\n".join(f"  {k}: {v}" for k, v in response.headers.items())
    return (f"request: {req.method} {req.url}\n{req_headers}\n  body: {req.content.decode('utf-8', 'replace')}\n"
            f"response: {response.status_code}\n{resp_headers}\n  body: {response.text[:2000]}")


def reply_to(response: httpx2.Response, request_id: int | str) -> dict[str, Any]:
    """The JSON-RPC reply with ``request_id``, or CheckFailed quoting the exchange."""
    try:
        found = [m for m in messages(response) if isinstance(m, dict) and m.get("id") == request_id]
    except ValueError as exc:
        raise CheckFailed(f"undecodable answer ({exc})\n{describe(response)}") from None
    if response.status_code != 200 or not found:
        raise CheckFailed(f"no JSON-RPC reply with id {request_id!r} (HTTP {response.status_code})\n"
                          f"{describe(response)}")
    reply: dict[str, Any] = found[-1]
    return reply


def check_call(response: httpx2.Response, request_id: int) -> dict[str, Any]:
    """The ``structuredContent`` of a correct ``echo__ping`` result, else CheckFailed."""
    reply = reply_to(response, request_id)
    result = reply.get("result")
    problems = []
    if not isinstance(result, dict):
        problems.append(f"no result (got {reply.get('error')!r})")
        result = {}
    if result.get("isError") is not False:
        problems.append(f"isError is {result.get('isError')!r}")
    content: dict[str, Any] = result.get("structuredContent") or {}
    if not isinstance(content, dict):
        content = {}
    if content.get("pong") is not True:
        problems.append("structuredContent.pong is not true")
    if content.get("message") != ARGUMENTS["message"]:
        problems.append(f"structuredContent.message is {content.get('message')!r}")
    if problems:
        raise CheckFailed(f"incorrect tools/call result: {'; '.join(problems)}\n{describe(response)}")
    return content


# -- preparing a flow -----------------------------------------------------------------------
@dataclass
class Prepared:
    """A request ready to time, with the session it opened (if any)."""

    request: CallRequest
    session_id: str | None = None
    notes: list[str] = field(default_factory=list)


def open_session(client: httpx2.Client, base_url: str, extra: dict[str, str] | None = None) -> str:
    """``initialize`` + ``notifications/initialized``; returns the ``Mcp-Session-Id``."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": CLIENT_INFO}}
    headers = {"Content-Type": "application/json", "Accept": ACCEPT, **(extra or {})}
    response = client.post(f"{base_url}/mcp", content=compact(init), headers=headers)
    reply = reply_to(response, 0)
    session_id = response.headers.get("mcp-session-id")
    if "result" not in reply or not session_id:
        raise CheckFailed(f"initialize did not open a session\n{describe(response)}")
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    headers |= {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": HANDSHAKE}
    acked = client.post(f"{base_url}/mcp", content=compact(note), headers=headers)
    if acked.status_code != 202:
        raise CheckFailed(f"notifications/initialized was not accepted\n{describe(acked)}")
    return session_id


def prepare(client: httpx2.Client, flow: str, kind: str, base_url: str,
            auth: dict[str, str] | None = None) -> Prepared:
    """The request to time for ``flow`` on a server of ``kind`` (gateway, baseline, ceiling);
    ``auth`` (the gateway's ``Authorization``) rides on every request, the handshake's too."""
    auth = auth or {}
    if kind == "ceiling":
        return with_headers(Prepared(modern_request()), auth)
    if flow == "modern-2026":
        return with_headers(Prepared(modern_request()), auth)
    if flow == "stateless":
        return with_headers(Prepared(stateless_request("/mcp/stateless" if kind == "gateway" else "/mcp")), auth)
    if flow == "session-2025":
        session_id = open_session(client, base_url, auth)
        return with_headers(Prepared(session_request(session_id), session_id), auth)
    raise ValueError(f"unknown flow {flow!r}")


def with_headers(prepared: Prepared, extra: dict[str, str]) -> Prepared:
    req = prepared.request
    prepared.request = CallRequest(req.path, {**req.headers, **extra}, req.params)
    return prepared


def precheck(client: httpx2.Client, base_url: str, request: CallRequest, request_id: int = 1) -> dict[str, Any]:
    """Send the request once and check the answer is a correct result."""
    response = client.post(f"{base_url}{request.path}", content=request.body(request_id), headers=request.headers)
    return check_call(response, request_id)
