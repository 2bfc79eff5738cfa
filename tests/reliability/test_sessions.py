"""C. Sessions and transport, on a real gateway.

C1 DNS rebinding (bad Origin 403, bad Host 421, no Origin allowed, loopback by default)
C2 session ids: 128 random bits, visible ASCII; missing 400, unknown or ended 404
C3 a session used by another principal: 404, exactly as if it did not exist
C4 a second GET stream on a session: 409, the first keeps working
C5 wrong Accept / Content-Type / method: 406 / 415 / 405
(C2's expiry is in test_limits.py, on a gateway with a short idle timeout.)
"""

from __future__ import annotations

import re
import secrets
import socket

import httpx2
import pytest

from northstar.common.config import Settings
from tests.harness import GatewayProcess
from tests.reliability.kit import (
    ACCEPT_BOTH,
    HANDSHAKE,
    MODERN,
    LegacySse,
    Session,
    assert_envelope,
    assert_rpc_error,
    connect,
    fresh,
    grant,
    healthy,
    init_params,
    mcp_headers,
    modern_request,
    read_response,
    rpc,
)

VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+$")


def mcp_doors(gw: GatewayProcess, tenant: str, sse_endpoint: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    init = httpx2.Request("POST", "/", json=rpc("initialize", init_params())).read()
    return [
        ("POST", "/mcp", mcp_headers(tenant), init),
        ("POST", "/mcp/stateless", mcp_headers(tenant), httpx2.Request("POST", "/", json=rpc("ping")).read()),
        ("GET", "/sse", {"Accept": "text/event-stream", "X-Tenant-Id": tenant}, b""),
        ("POST", sse_endpoint, mcp_headers(tenant), httpx2.Request("POST", "/", json=rpc("ping")).read()),
    ]


# -- C1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["http://evil.example", "https://127.0.0.1.evil.example", "null",
                                    "http://localhost:1.evil.example", "http://localhost.evil.example:80"])
def test_c1_bad_origin_is_403_on_every_door(rgw: GatewayProcess, http: httpx2.Client, origin: str) -> None:
    tenant = fresh("c1")
    with LegacySse(rgw, tenant) as sse:
        for method, path, headers, body in mcp_doors(rgw, tenant, sse.endpoint):
            resp = http.request(method, f"{rgw.url}{path}", content=body, headers={**headers, "Origin": origin})
            assert_rpc_error(resp, 403, -32600, "forbidden")
        for path in ("/health", "/v1/tools"):
            assert_envelope(http.get(f"{rgw.url}{path}", headers={"Origin": origin}), 403, "forbidden")
        sse.post(rpc("ping", None, 5))
        assert sse.reply(5)["result"] == {}  # the session did not hear any of it


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example",
                                  "127.0.0.1:80.evil.example", "localhost.evil.example", "10.0.0.1:8000"])
def test_c1_bad_host_is_421_on_every_door(rgw: GatewayProcess, http: httpx2.Client, host: str) -> None:
    tenant = fresh("c1")
    with LegacySse(rgw, tenant) as sse:
        for method, path, headers, body in mcp_doors(rgw, tenant, sse.endpoint):
            resp = http.request(method, f"{rgw.url}{path}", content=body, headers={**headers, "Host": host})
            assert_rpc_error(resp, 421, -32600, "misdirected_request")
        for path in ("/health", "/v1/tools"):
            assert_envelope(http.get(f"{rgw.url}{path}", headers={"Host": host}), 421, "misdirected_request")


def test_c1_no_origin_and_loopback_origins_are_allowed(rgw: GatewayProcess, http: httpx2.Client) -> None:
    for origin in (None, "http://localhost", f"http://127.0.0.1:{rgw.port}", "https://localhost:3000",
                   "http://[::1]:8080"):
        headers = mcp_headers(fresh("c1"), **({"Origin": origin} if origin else {}))
        resp = http.post(f"{rgw.url}/mcp", json=rpc("initialize", init_params()), headers=headers)
        assert resp.status_code == 200, (origin, resp.text)
        http.delete(f"{rgw.url}/mcp", headers={**headers, "Mcp-Session-Id": resp.headers["mcp-session-id"],
                                                "MCP-Protocol-Version": HANDSHAKE})
    for host in ("localhost", f"localhost:{rgw.port}", "127.0.0.1"):
        assert http.get(f"{rgw.url}/health", headers={"Host": host}).status_code == 200


def test_c1_default_bind_is_loopback() -> None:
    from northstar.cli.main import parser, settings_from

    assert Settings().host == "127.0.0.1"
    settings = settings_from(parser().parse_args(["serve"]))
    assert settings.host == "127.0.0.1" and settings.is_loopback


# -- C2 ---------------------------------------------------------------------------------------------
def random_bits_everywhere(ids: list[str]) -> None:
    """uuid4 fixes the version nibble (index 12) to 4 and the variant (index 16) to 8-b; ids
    made of 128 random bits take other values there too."""
    assert len(set(ids)) == len(ids)
    for sid in ids:
        assert VISIBLE_ASCII.fullmatch(sid) and re.fullmatch(r"[0-9a-f]{32}", sid), sid
    assert len({sid[12] for sid in ids}) > 1
    assert {sid[16] for sid in ids} - set("89ab")


def test_c2_streamable_session_ids_are_unguessable(rgw: GatewayProcess, http: httpx2.Client) -> None:
    sessions = [Session(http, rgw.url, fresh("c2")).open() for _ in range(64)]
    random_bits_everywhere([s.id or "" for s in sessions])
    for s in sessions:
        assert s.delete() == 200


def test_c2_legacy_sse_session_ids_are_unguessable(rgw: GatewayProcess) -> None:
    ids = []
    for _ in range(24):
        with LegacySse(rgw, fresh("c2"), initialize=False) as sse:
            ids.append(sse.session_id)
    random_bits_everywhere(ids)


def test_c2_missing_session_id_is_400(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("c2")
    headers = mcp_headers(tenant, version=HANDSHAKE)
    assert_rpc_error(http.post(f"{rgw.url}/mcp", json=rpc("tools/list"), headers=headers), 400, -32600)
    assert_rpc_error(http.get(f"{rgw.url}/mcp", headers={**headers, "Accept": "text/event-stream"}), 400, -32600)
    assert_rpc_error(http.delete(f"{rgw.url}/mcp", headers=headers), 400, -32600)
    resp = http.post(f"{rgw.url}/messages/", json=rpc("ping"), headers=mcp_headers(tenant))
    assert_rpc_error(resp, 400, -32600)


@pytest.mark.parametrize("sid", [secrets.token_hex(16), "0" * 32, "not-a-session", "a" * 300, "../../etc"],
                         ids=["random", "zeros", "word", "long", "path"])
def test_c2_unknown_session_id_is_404(rgw: GatewayProcess, http: httpx2.Client, sid: str) -> None:
    headers = mcp_headers(fresh("c2"), version=HANDSHAKE, session=sid)
    assert_rpc_error(http.post(f"{rgw.url}/mcp", json=rpc("tools/list"), headers=headers), 404, -32600,
                     "not_found")
    assert_rpc_error(http.get(f"{rgw.url}/mcp", headers={**headers, "Accept": "text/event-stream"}), 404, -32600)
    assert_rpc_error(http.delete(f"{rgw.url}/mcp", headers=headers), 404, -32600)


def test_c2_unknown_legacy_session_is_404_and_malformed_is_400(rgw: GatewayProcess, http: httpx2.Client) -> None:
    headers = mcp_headers(fresh("c2"))
    unknown = http.post(f"{rgw.url}/messages/?session_id={secrets.token_hex(16)}", json=rpc("ping"), headers=headers)
    assert_rpc_error(unknown, 404, -32600, "not_found")
    malformed = http.post(f"{rgw.url}/messages/?session_id=../../x", json=rpc("ping"), headers=headers)
    assert_rpc_error(malformed, 400, -32600)


def test_c2_an_ended_session_is_404(rgw: GatewayProcess, http: httpx2.Client) -> None:
    session = Session(http, rgw.url, fresh("c2")).open()
    assert session.delete() == 200
    assert_rpc_error(session.post(rpc("tools/list")), 404, -32600)
    with LegacySse(rgw, fresh("c2")) as sse:
        endpoint = sse.endpoint
        tenant = sse.tenant
    # closing the stream ends the legacy session: its endpoint is gone (bounded poll: the server
    # notices the disconnect asynchronously)
    from tests.reliability.kit import wait_until

    assert wait_until(lambda: http.post(f"{rgw.url}{endpoint}", json=rpc("ping"),
                                        headers=mcp_headers(tenant)).status_code == 404, 10)


# -- C3 ---------------------------------------------------------------------------------------------
def strip_ids(body: dict) -> dict:
    body = dict(body)
    body["error"] = {**body["error"], "data": {**body["error"]["data"], "request_id": "-"}}
    return body


def test_c3_a_session_of_another_principal_is_404(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("c3")
    alice = Session(http, rgw.url, tenant, "alice").open()
    unknown = http.post(f"{rgw.url}/mcp", json=rpc("tools/list"),
                        headers=mcp_headers(tenant, "alice", version=HANDSHAKE, session=secrets.token_hex(16)))
    for intruder in (("bob", tenant), ("alice", fresh("other-tenant")), ("Alice", tenant)):
        user, other_tenant = intruder
        headers = mcp_headers(other_tenant, user, version=HANDSHAKE, session=alice.id)
        post = http.post(f"{rgw.url}/mcp", json=rpc("tools/call", {"name": "echo__ping", "arguments": {}}),
                         headers=headers)
        assert_rpc_error(post, 404, -32600, "not_found")
        assert strip_ids(post.json()) == strip_ids(unknown.json())  # indistinguishable from "no such session"
        assert_rpc_error(http.get(f"{rgw.url}/mcp", headers={**headers, "Accept": "text/event-stream"}), 404,
                         -32600)
        assert_rpc_error(http.delete(f"{rgw.url}/mcp", headers=headers), 404, -32600)
    assert "result" in alice.request("tools/list")  # alice's session is unharmed and still hers
    assert alice.delete() == 200


def test_c3_legacy_session_of_another_principal_is_404(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("c3")
    with LegacySse(rgw, tenant, "alice") as sse:
        stolen = http.post(f"{rgw.url}{sse.endpoint}", headers=mcp_headers(tenant, "mallory"),
                           json=rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "x"}}, 66))
        assert_rpc_error(stolen, 404, -32600, "not_found")
        sse.post(rpc("ping", None, 67))
        assert sse.reply(67)["id"] == 67  # and nothing of mallory's call reached alice's stream first


# -- C4 ---------------------------------------------------------------------------------------------
def open_get_stream(gw: GatewayProcess, session: Session) -> tuple[socket.socket, int]:
    sock = connect(gw)
    headers = {**session.headers(), "Accept": "text/event-stream", "Host": f"127.0.0.1:{gw.port}"}
    head = "GET /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k != "Content-Type")
    sock.sendall((head + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    return sock, int(data.split()[1])


def test_c4_second_get_stream_is_409_and_the_first_keeps_working(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("c4")
    session = Session(http, rgw.url, tenant).open()
    assert "result" in session.request("tools/list")  # the session now hears tools/list_changed
    first, status = open_get_stream(rgw, session)
    assert status == 200
    with first:
        second = http.get(f"{rgw.url}/mcp", headers={**session.headers(), "Accept": "text/event-stream"})
        assert_rpc_error(second, 409, -32600, "conflict")
        grant(rgw.url, tenant, "u")  # a policy change: every session is told its tool list changed
        first.settimeout(10)
        seen = b""
        while b"notifications/tools/list_changed" not in seen:
            chunk = first.recv(65536)
            assert chunk, "the first stream was closed"
            seen += chunk
        assert "result" in session.request("ping")
    assert session.delete() == 200


# -- C5 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "text/html", "", "application/xml"])
def test_c5_wrong_accept_is_406(rgw: GatewayProcess, http: httpx2.Client, accept: str) -> None:
    tenant = fresh("c5")
    for version in (None, HANDSHAKE, MODERN):
        headers = {**mcp_headers(tenant), "Accept": accept, **({"MCP-Protocol-Version": version} if version else {})}
        resp = http.post(f"{rgw.url}/mcp", json=rpc("initialize", init_params()), headers=headers)
        assert_rpc_error(resp, 406, -32600, "not_acceptable")
    if "json" not in accept:
        resp = http.post(f"{rgw.url}/mcp/stateless", json=rpc("ping"),
                         headers={**mcp_headers(tenant), "Accept": accept})
        assert_rpc_error(resp, 406, -32600, "not_acceptable")


def test_c5_get_stream_needs_event_stream(rgw: GatewayProcess, http: httpx2.Client) -> None:
    session = Session(http, rgw.url, fresh("c5")).open()
    resp = http.get(f"{rgw.url}/mcp", headers={**session.headers(), "Accept": "application/json"})
    assert_rpc_error(resp, 406, -32600, "not_acceptable")
    session.delete()


@pytest.mark.parametrize("ctype", ["text/plain", "", "application/jsonx", "multipart/form-data; boundary=x",
                                   "application/x-www-form-urlencoded", "text/json"])
def test_c5_wrong_content_type_is_415(rgw: GatewayProcess, http: httpx2.Client, ctype: str) -> None:
    tenant = fresh("c5")
    body = httpx2.Request("POST", "/", json=rpc("initialize", init_params())).read()
    with LegacySse(rgw, tenant) as sse:
        for path in ("/mcp", "/mcp/stateless", sse.endpoint):
            # A fresh connection per request: a refused body ends its connection, and reusing a
            # closing keep-alive connection under load is a client-side race, not the case here.
            headers = {**mcp_headers(tenant), "Content-Type": ctype, "Connection": "close"}
            if not ctype:
                del headers["Content-Type"]
            resp = http.post(f"{rgw.url}{path}", content=body, headers=headers)
            assert_rpc_error(resp, 415, -32600, "unsupported_media_type")
    # REST refuses the same media types, "application/jsonx" included (no Content-Type: text/plain here)
    rest = http.post(f"{rgw.url}/v1/tools/echo.ping/call", content=b'{"arguments":{}}',
                     headers={"Content-Type": ctype or "text/plain", "Connection": "close"})
    assert_envelope(rest, 415, "unsupported_media_type")


def test_c5_wrong_method_is_405(rgw: GatewayProcess, http: httpx2.Client) -> None:
    tenant = fresh("c5")
    with LegacySse(rgw, tenant) as sse:
        cases = [(m, "/mcp", "GET, POST, DELETE") for m in ("PUT", "PATCH", "OPTIONS")]
        cases += [(m, "/mcp/stateless", "GET, POST, DELETE") for m in ("PUT", "PATCH")]
        cases += [(m, sse.endpoint, "POST") for m in ("GET", "PUT", "DELETE")]
        cases += [(m, "/sse", "GET") for m in ("POST", "PUT", "DELETE")]
        for method, path, allow in cases:
            resp = http.request(method, f"{rgw.url}{path}", content=b"{}", headers=mcp_headers(tenant))
            assert_rpc_error(resp, 405, -32600, "method_not_allowed")
            assert resp.headers["allow"] == allow
        head = http.head(f"{rgw.url}/mcp", headers=mcp_headers(tenant))
        assert head.status_code == 405
    assert_envelope(http.delete(f"{rgw.url}/v1/tools"), 405, "method_not_allowed")
    assert healthy(rgw)


def test_c5_get_on_the_2026_era_is_405(rgw: GatewayProcess, http: httpx2.Client) -> None:
    headers = {**mcp_headers(fresh("c5"), version=MODERN), "Accept": "text/event-stream"}
    assert_rpc_error(http.get(f"{rgw.url}/mcp", headers=headers), 405, -32600, "method_not_allowed")
    body, route = modern_request("tools/list")
    assert http.post(f"{rgw.url}/mcp", json=body, headers=mcp_headers("c5", **route)).status_code == 200


def test_c2_raw_session_header_with_control_bytes(rgw: GatewayProcess) -> None:
    """A session id header with bytes outside visible ASCII never reaches a session."""
    with connect(rgw) as sock:
        body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Accept: " + ACCEPT_BOTH.encode() + b"\r\nMcp-Session-Id: \xff\xfe\xfd\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        status, _, _ = read_response(sock)
        assert status == 404
