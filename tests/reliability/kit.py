"""Helpers for the reliability suite: MCP messages over raw HTTP, raw sockets, the error
contract's assertions, and what a gateway process uses (descriptors, memory).

Everything here talks to a real gateway (``tests.harness.GatewayProcess``) over its port.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

from tests.harness import GatewayProcess, admin_headers, gateway_env

HANDSHAKE = "2025-06-18"
MODERN = "2026-07-28"
ACCEPT_BOTH = "application/json, text/event-stream"
ENVELOPE_KEYS = {"code", "message", "http_status", "request_id", "details"}
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
# Every gateway of this suite runs with the diagnostics tool (sleep, crash) for fault drills.
BASE_ENV = {"NORTHSTAR_ENABLE_DIAGNOSTICS": "true"}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ident(tenant: str, user: str = "u") -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Id": user}


def rpc(method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def init_params(version: str = HANDSHAKE) -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "reliability", "version": "1"}}


def mcp_headers(tenant: str, user: str = "u", *, version: str | None = None, session: str | None = None,
                **extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, **ident(tenant, user)}
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    if session is not None:
        headers["Mcp-Session-Id"] = session
    headers.update(extra)
    return headers


def modern_request(method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> tuple[dict[str, Any],
                                                                                             dict[str, str]]:
    """A 2026-07-28 request body and its routing headers (Mcp-Method, Mcp-Name)."""
    body = rpc(method, {**(params or {}), "_meta": META}, rid)
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if method == "tools/call" and params is not None:
        headers["Mcp-Name"] = str(params.get("name"))
    return body, headers


def sse_messages(text: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages in an SSE body (``data:`` lines; each event is one line here).

    Lines end at CR, LF or CRLF only: ``str.splitlines`` would also split at U+2028, U+0085
    and the like, which JSON strings may carry unescaped.
    """
    out = []
    for line in re.split(r"\r\n|\r|\n", text):
        if line.startswith("data:"):
            data = line[5:].strip(" ")
            if data:
                out.append(json.loads(data))
    return out


def reply_of(resp: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC reply of a POST, whether it came as JSON or as an SSE stream."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        replies = [m for m in sse_messages(resp.text) if "result" in m or "error" in m]
        assert len(replies) == 1, resp.text
        return replies[0]
    body: dict[str, Any] = resp.json()
    return body


def tool_error(result: dict[str, Any]) -> dict[str, Any]:
    """The envelope of an ``isError`` tool result (it rides in ``_meta["northstar/error"]``)."""
    assert result.get("isError") is True, result
    err: dict[str, Any] = result["_meta"]["northstar/error"]
    assert set(err) == ENVELOPE_KEYS, err
    assert json.loads(result["content"][0]["text"])["error"] == err
    return err


# -- the error contract -------------------------------------------------------------------------
def assert_envelope(resp: httpx2.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A REST error: the canonical envelope, and the same request id in the header."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ENVELOPE_KEYS, err
    assert err["http_status"] == status
    if code is not None:
        assert err["code"] == code, err
    assert resp.headers["x-request-id"] == err["request_id"]
    if status in (429, 503):
        assert int(resp.headers["retry-after"]) >= 1
    assert_no_internals(resp.text)
    return dict(err)


def assert_rpc_error(resp: httpx2.Response, status: int, rpc_code: int, code: str | None = None,
                     rid: Any = None) -> dict[str, Any]:
    """An MCP error answered over HTTP: a JSON-RPC error whose ``data`` is the envelope."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert body.get("jsonrpc") == "2.0" and "result" not in body, body
    assert body["id"] == rid, body
    error = body["error"]
    assert error["code"] == rpc_code, body
    assert isinstance(error["message"], str) and error["message"]
    data = error["data"]
    assert set(data) == ENVELOPE_KEYS, data
    assert data["http_status"] == status
    if code is not None:
        assert data["code"] == code, data
    assert resp.headers["x-request-id"] == data["request_id"]
    if status in (429, 503):
        assert int(resp.headers["retry-after"]) >= 1
    assert_no_internals(resp.text)
    return dict(error)


LEAKS = ("Traceback", 'File "/', "/work/", "site-packages", "sqlite3.", "asyncpg", "SELECT ", "INSERT INTO",
         "input_value", "pydantic")


def assert_no_internals(text: str) -> None:
    for marker in LEAKS:
        assert marker not in text, f"{marker!r} leaked: {text[:500]}"


# -- a handshake-era Streamable HTTP session over plain HTTP ----------------------------------------
class Session:
    """An initialised 2025-era session on ``/mcp`` driven by raw POSTs (sync client)."""

    def __init__(self, http: httpx2.Client, url: str, tenant: str, user: str = "u",
                 version: str = HANDSHAKE, *, auth: dict[str, str] | None = None) -> None:
        self.http, self.url, self.tenant, self.user, self.version = http, url, tenant, user, version
        self.auth = dict(auth or {})  # e.g. an Authorization header, sent with every request
        self.id: str | None = None
        self.next_id = 1

    def open(self) -> Session:
        resp = self.http.post(f"{self.url}/mcp", json=rpc("initialize", init_params(self.version), 0),
                              headers=mcp_headers(self.tenant, self.user, **self.auth))
        assert resp.status_code == 200, resp.text
        self.id = resp.headers["mcp-session-id"]
        assert "result" in reply_of(resp)
        done = self.http.post(f"{self.url}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                              headers=self.headers())
        assert done.status_code == 202, done.text
        return self

    def headers(self, **extra: str) -> dict[str, str]:
        return mcp_headers(self.tenant, self.user, version=self.version, session=self.id, **self.auth, **extra)

    def post(self, body: Any, **extra: str) -> httpx2.Response:
        return self.http.post(f"{self.url}/mcp", json=body, headers=self.headers(**extra))

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        resp = self.post(rpc(method, params, rid))
        assert resp.status_code == 200, resp.text
        reply = reply_of(resp)
        assert reply["id"] == rid
        return reply

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments or {}})

    def delete(self) -> int:
        return self.http.delete(f"{self.url}/mcp", headers=self.headers()).status_code


# -- raw sockets: for what an HTTP client library will not send -------------------------------------
def connect(gw: GatewayProcess, *, rcvbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", gw.port))
    return sock


def read_response(sock: socket.socket, deadline_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length body (status, headers, body)."""
    sock.settimeout(deadline_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the server closes the connection within ``within_s`` (data before EOF is drained)."""
    end = time.monotonic() + within_s
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def raw_exchange(gw: GatewayProcess, data: bytes, deadline_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    with connect(gw) as sock:
        sock.sendall(data)
        return read_response(sock, deadline_s)


# -- the gateway process ---------------------------------------------------------------------------
def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``check`` until it holds or ``timeout_s`` passes (for a real server's asynchronous effect)."""
    end = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval_s)


def healthy(gw: GatewayProcess) -> bool:
    assert gw.proc is not None and gw.proc.poll() is None, "the gateway process died:\n" + gw.stderr_text()[-3000:]
    return bool(httpx2.get(f"{gw.url}/health", timeout=10).status_code == 200)


def audit(url: str, **filters: str) -> list[dict[str, Any]]:
    """Audit entries (admin view), every page."""
    out: list[dict[str, Any]] = []
    after: Any = None
    while True:
        params = {**filters, "limit": "1000", **({"after_seq": str(after)} if after else {})}
        resp = httpx2.get(f"{url}/v1/audit", params=params, headers=admin_headers(url), timeout=30)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        out += body["entries"]
        after = body["next_after_seq"]
        if after is None:
            return out


def grant(url: str, tenant: str, user: str, firearm: str = "firearm.media.write") -> None:
    resp = httpx2.post(f"{url}/v1/firearms/grants", headers=admin_headers(url),
                       json={"tenant": tenant, "user": user, "firearm": firearm, "reason": "reliability"})
    assert resp.status_code == 201, resp.text


def traceback_free(gw: GatewayProcess, *, expected_from: tuple[str, ...] = ()) -> None:
    """No traceback on stderr, except in error records of the loggers in ``expected_from``
    (a store outage is logged with its cause on purpose)."""
    for line in gw.lines:
        if "Traceback" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("logger") in expected_from:
            continue
        raise AssertionError("traceback on stderr:\n" + line[:4000])


@contextmanager
def started(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[GatewayProcess]:
    with GatewayProcess(data_dir, env={**BASE_ENV, **(env or {})}) as gw:
        yield gw


class LegacySse:
    """A legacy HTTP+SSE session: the GET /sse stream on a raw socket, messages POSTed."""

    def __init__(self, gw: GatewayProcess, tenant: str, user: str = "u", *, rcvbuf: int | None = None,
                 initialize: bool = True, auth: dict[str, str] | None = None) -> None:
        self.gw, self.tenant, self.user, self.rcvbuf, self.initialize = gw, tenant, user, rcvbuf, initialize
        self.auth = dict(auth or {})  # e.g. an Authorization header, sent with the stream and every message
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.endpoint = ""
        self.http = httpx2.Client(timeout=30)

    def __enter__(self) -> LegacySse:
        self.sock = connect(self.gw, rcvbuf=self.rcvbuf)
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.auth.items())
        head = (f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{self.gw.port}\r\nAccept: text/event-stream\r\n"
                f"X-Tenant-Id: {self.tenant}\r\nX-User-Id: {self.user}\r\n{extra}\r\n")
        self.sock.sendall(head.encode())
        while "session_id=" not in self.buffer.decode("latin-1"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(self.buffer.decode("latin-1"))
            self.buffer += chunk
        text = self.buffer.decode("latin-1")
        self.status = int(text.split()[1])
        line = next(ln for ln in text.splitlines() if ln.startswith("data:") and "session_id=" in ln)
        self.endpoint = line[5:].strip()
        self.buffer = b""
        if self.initialize:
            self.post(rpc("initialize", init_params(), 0))
            assert "result" in self.next_message()
            self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()
        self.http.close()

    @property
    def session_id(self) -> str:
        return self.endpoint.split("session_id=", 1)[1]

    def post(self, body: Any, *, raw: bytes | None = None, **headers: str) -> httpx2.Response:
        hdrs = {"Content-Type": "application/json", **ident(self.tenant, self.user), **self.auth, **headers}
        content = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(f"{self.gw.url}{self.endpoint}", content=content, headers=hdrs)

    def next_message(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next JSON-RPC message on the stream (chunk-size lines and pings skipped)."""
        assert self.sock is not None
        end = time.monotonic() + timeout_s
        while True:
            while b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                text = line.decode("utf-8", "replace").strip()
                if text.startswith("data:") and text[5:].strip().startswith("{"):
                    msg: dict[str, Any] = json.loads(text[5:].strip())
                    return msg
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message on the SSE stream")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the SSE stream was closed")
            self.buffer += chunk

    def reply(self, rid: Any, timeout_s: float = 10.0) -> dict[str, Any]:
        """The reply to request ``rid`` (notifications before it are skipped)."""
        while True:
            msg = self.next_message(timeout_s)
            if msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg


# -- stdio --------------------------------------------------------------------------------------------
def run_stdio(data_dir: Path, lines: list[bytes], expect: int | Callable[[list[dict[str, Any]]], bool],
              timeout_s: float = 120.0) -> tuple[list[dict[str, Any]], str, int]:
    """Feed ``lines`` to ``northstar stdio``; once ``expect`` replies came (or ``expect(messages)``
    holds), close stdin and wait for the exit. Every stdout line must parse as JSON: stdout
    carries nothing but JSON-RPC. Returns (messages, stderr, exit code)."""
    done = expect if callable(expect) else (lambda msgs: len(replies(msgs)) >= expect)
    proc = subprocess.Popen(
        [sys.executable, "-m", "northstar", "stdio", "--tenant", fresh("stdio"), "--user", "u"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=gateway_env(data_dir),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout = proc.stdin, proc.stdout
    errors: list[str] = []
    stderr_reader = threading.Thread(target=lambda: errors.append(proc.stderr.read().decode("utf-8", "replace")),  # type: ignore[union-attr]
                                     daemon=True)
    stderr_reader.start()

    def feed() -> None:
        for line in lines:
            stdin.write(line + b"\n")
            stdin.flush()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    messages: list[dict[str, Any]] = []
    got: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [got.put(raw) for raw in stdout], daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while not done(messages):
            raw = got.get(timeout=max(0.1, deadline - time.monotonic()))
            messages.append(json.loads(raw))  # stdout carries nothing but JSON-RPC
        writer.join(timeout=timeout_s)
        stdin.close()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    while not got.empty():
        messages.append(json.loads(got.get()))
    stderr_reader.join(timeout=30)
    return messages, "".join(errors), code


def replies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "result" in m or "error" in m]
