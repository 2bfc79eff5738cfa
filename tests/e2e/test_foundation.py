"""The gateway's front door on a real port: health, the error envelope, identity headers,
and graceful shutdown on SIGTERM / SIGINT."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx2
import pytest

from tests.harness import GatewayProcess

ENVELOPE_KEYS = {"code", "message", "http_status", "request_id", "details"}


def assert_envelope(resp: httpx2.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == ENVELOPE_KEYS
    assert err["code"] == code
    assert err["http_status"] == status
    assert resp.headers["x-request-id"] == err["request_id"]
    return err


def test_health_reports_status_and_version(gateway: GatewayProcess) -> None:
    from northstar import __version__

    resp = httpx2.get(f"{gateway.url}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert resp.headers["x-request-id"]


def test_invalid_mode_header_is_a_canonical_400(gateway: GatewayProcess) -> None:
    resp = httpx2.get(f"{gateway.url}/health", headers={"X-Mode": "invalid"})
    err = assert_envelope(resp, 400, "invalid_header")
    assert err["details"]["header"] == "x-mode"


@pytest.mark.parametrize(
    ("headers", "bad"),
    [
        ({"X-Tenant-Id": "acme\ttab"}, "x-tenant-id"),
        ({"X-User-Id": "u" * 129}, "x-user-id"),
        ({"X-Request-Id": "has space"}, "x-request-id"),
        ({"X-User-Id": "../etc"}, "x-user-id"),
    ],
)
def test_bad_identity_headers_name_the_header(gateway: GatewayProcess, headers: dict, bad: str) -> None:
    err = assert_envelope(httpx2.get(f"{gateway.url}/v1/tools", headers=headers), 400, "invalid_header")
    assert err["details"]["header"] == bad


def test_duplicated_identity_header_is_refused(gateway: GatewayProcess) -> None:
    headers = [("X-Tenant-Id", "a"), ("X-Tenant-Id", "b")]
    err = assert_envelope(httpx2.get(f"{gateway.url}/v1/tools", headers=headers), 400, "invalid_header")
    assert err["details"]["header"] == "x-tenant-id"


def test_request_id_is_echoed(gateway: GatewayProcess) -> None:
    resp = httpx2.get(f"{gateway.url}/health", headers={"X-Request-Id": "req-123"})
    assert resp.headers["x-request-id"] == "req-123"


def test_unknown_route_and_wrong_method_use_the_envelope(gateway: GatewayProcess) -> None:
    assert_envelope(httpx2.get(f"{gateway.url}/nope"), 404, "not_found")
    assert_envelope(httpx2.delete(f"{gateway.url}/health"), 405, "method_not_allowed")


def test_oversized_body_is_413(gateway: GatewayProcess) -> None:
    big = b"{" + b" " * (5 * 1024 * 1024) + b"}"
    resp = httpx2.post(f"{gateway.url}/v1/tools/echo.ping/call", content=big,
                       headers={"Content-Type": "application/json"})
    assert_envelope(resp, 413, "payload_too_large")


def test_invalid_json_body_is_400(gateway: GatewayProcess) -> None:
    resp = httpx2.post(f"{gateway.url}/v1/tools/echo.ping/call", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert_envelope(resp, 400, "invalid_json")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown(tmp_path: Path, sig: int) -> None:
    gw = GatewayProcess(tmp_path).start()
    assert httpx2.get(f"{gw.url}/health").status_code == 200
    code = gw.stop(sig, timeout=15)
    assert code == 0, gw.stderr_text()
    assert "Traceback" not in gw.stderr_text()
    assert '"msg": "stopped"' in gw.stderr_text()


def test_ops_runtime_reports_the_audit_group_commit(gateway: GatewayProcess) -> None:
    admin = gateway.admin_headers
    before = httpx2.get(f"{gateway.url}/v1/ops/runtime", headers=admin).json()["audit"]
    for i in range(5):
        resp = httpx2.post(f"{gateway.url}/v1/tools/echo.ping/call", json={"arguments": {"message": str(i)}})
        assert resp.status_code == 200, resp.text
    after = httpx2.get(f"{gateway.url}/v1/ops/runtime", headers=admin).json()["audit"]
    assert after["appended"] - before["appended"] >= 5  # one record per call, each committed
    assert after["flushes"] > before["flushes"] and after["failed_flushes"] == 0
    assert 1 <= after["mean_batch"] <= after["largest_batch"] and after["pending"] == 0
    assert httpx2.get(f"{gateway.url}/v1/ops/runtime").status_code == 403  # admin only
    assert httpx2.get(f"{gateway.url}/v1/ops/runtime", headers={"X-User-Id": "admin"}).status_code == 403
