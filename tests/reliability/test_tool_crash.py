"""A tool actor that crashes mid-call: the caller gets a clean error, the supervisor restarts the
actor, the next call succeeds, and sibling sessions do not notice.

Two real crashes: ``diagnostics.crash`` (the fault-drill tool: an unexpected exception in the
handler) and a built-in one, ``media_v2.create_asset`` hitting an OS error (the tenant's blob
directory is a regular file: what a broken disk or a bad mount looks like to the handler).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.harness import GatewayProcess
from tests.reliability.kit import (
    LegacySse,
    Session,
    assert_envelope,
    assert_no_internals,
    audit,
    fresh,
    grant,
    healthy,
    mcp_headers,
    modern_request,
    reply_of,
    rpc,
    started,
    tool_error,
)


def rest(http: httpx2.Client, gw: GatewayProcess, tenant: str, name: str, arguments: dict[str, Any]) -> httpx2.Response:
    return http.post(f"{gw.url}/v1/tools/{name}/call", json={"arguments": arguments},
                     headers={"X-Tenant-Id": tenant, "X-User-Id": "u"})


class Siblings:
    """Sessions of other principals on every door, used before and after the crash."""

    def __init__(self, gw: GatewayProcess, http: httpx2.Client) -> None:
        self.gw, self.http = gw, http
        self.session = Session(http, gw.url, fresh("sib")).open()
        self.sse = LegacySse(gw, fresh("sib")).__enter__()
        self.modern_tenant = fresh("sib")
        self.n = 100

    def all_work(self) -> None:
        self.n += 1
        reply = self.session.call("echo__ping", {"message": f"s{self.n}"})
        assert reply["result"]["structuredContent"]["message"] == f"s{self.n}"
        assert "result" in self.session.call("media_v2__list_assets", {})
        self.sse.post(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": f"l{self.n}"}}, self.n))
        assert self.sse.reply(self.n)["result"]["structuredContent"]["message"] == f"l{self.n}"
        body, route = modern_request("tools/call", {"name": "echo__ping", "arguments": {"message": f"m{self.n}"}})
        resp = self.http.post(f"{self.gw.url}/mcp", json=body, headers=mcp_headers(self.modern_tenant, **route))
        assert reply_of(resp)["result"]["structuredContent"]["message"] == f"m{self.n}"

    def close(self) -> None:
        self.sse.__exit__()
        assert self.session.delete() == 200


@pytest.fixture
def siblings(rgw: GatewayProcess, http: httpx2.Client) -> Iterator[Siblings]:
    s = Siblings(rgw, http)
    yield s
    s.close()


def test_diagnostics_crash_clean_error_restart_and_siblings_unharmed(rgw: GatewayProcess, http: httpx2.Client,
                                                                      siblings: Siblings) -> None:
    tenant = fresh("crash")
    siblings.all_work()
    for door in ("rest", "session", "modern"):
        if door == "rest":
            err = assert_envelope(rest(http, rgw, tenant, "diagnostics.crash", {"message": "boom"}), 502,
                                  "tool_error")
        elif door == "session":
            session = Session(http, rgw.url, tenant).open()
            err = tool_error(session.call("diagnostics__crash", {"message": "boom"})["result"])
            assert "result" in session.request("ping")  # the caller's own session survives too
            session.delete()
        else:
            body, route = modern_request("tools/call", {"name": "diagnostics__crash", "arguments": {"message": "boom"}})
            resp = http.post(f"{rgw.url}/mcp", json=body, headers=mcp_headers(tenant, **route))
            err = tool_error(reply_of(resp)["result"])
        assert err["code"] == "tool_error" and err["message"] == "the tool crashed while handling the call"
        assert "boom" not in str(err) and "DiagnosticsCrash" not in str(err)
        # restarted by its supervisor: the next call on the same tool succeeds
        assert rest(http, rgw, tenant, "diagnostics.sleep", {"seconds": 0}).status_code == 200
        siblings.all_work()
    crashes = [r for r in audit(rgw.url, tenant=tenant) if r["requested_name"] in
               ("diagnostics.crash", "diagnostics__crash")]
    assert len(crashes) == 3 and {(r["outcome"], r["error_code"]) for r in crashes} == {("error", "tool_error")}
    assert rgw.stderr_text().count('"tool crashed"') >= 3  # the operator sees each crash
    assert healthy(rgw)


def test_builtin_media_crash_on_an_os_error(rgw: GatewayProcess, http: httpx2.Client, siblings: Siblings) -> None:
    tenant = fresh("diskfail")
    grant(rgw.url, tenant, "u")
    blobs = rgw.data_dir / "blobs"
    blobs.mkdir(exist_ok=True)
    (blobs / tenant).write_text("a file where the tenant's blob directory should be")
    args = {"name": "a.txt", "mime_type": "text/plain", "content_text": "payload"}
    try:
        siblings.all_work()
        failed = rest(http, rgw, tenant, "media_v2.create_asset", args)
        err = assert_envelope(failed, 502, "tool_error")
        assert_no_internals(failed.text)
        assert "NotADirectory" not in failed.text and str(rgw.data_dir) not in failed.text
        assert err["message"] == "the tool crashed while handling the call"
        listed = rest(http, rgw, tenant, "media_v2.list_assets", {})
        assert listed.status_code == 200 and listed.json()["output"]["assets"] == []  # nothing half-written
        siblings.all_work()
    finally:
        (blobs / tenant).unlink()
    ok = rest(http, rgw, tenant, "media_v2.create_asset", args)  # the disk is back: the restarted actor serves
    assert ok.status_code == 200, ok.text
    asset_id = ok.json()["output"]["asset_id"]
    got = rest(http, rgw, tenant, "media_v2.get_asset", {"asset_id": asset_id})
    assert got.json()["output"]["content_text"] == "payload"
    outcomes = [r["outcome"] for r in audit(rgw.url, tenant=tenant) if r.get("event") == "outcome"]
    assert outcomes == ["error", "ok"]
    siblings.all_work()
    shutil.rmtree(blobs / tenant, ignore_errors=True)


def test_a_call_in_flight_on_the_crashing_actor_is_not_failed(rgw: GatewayProcess, http: httpx2.Client) -> None:
    with LegacySse(rgw, fresh("inflight")) as sse:
        accepted = sse.post(rpc("tools/call", {"name": "diagnostics__sleep", "arguments": {"seconds": 3}}, 5))
        assert accepted.status_code == 202  # handed to the session: its call is dispatched now
        assert rest(http, rgw, fresh("crash"), "diagnostics.crash", {}).status_code == 502
        result = sse.reply(5, timeout_s=30)["result"]
        assert not result.get("isError"), result


def test_a_flood_of_crashes_does_not_take_the_gateway_down(tmp_path_factory: pytest.TempPathFactory) -> None:
    """100 crashing calls in a row (the tools supervisor allows 10 restarts in 10 s): the storm stays
    with the crashing tool (502, or 503 while it is held back); the gateway lives on."""
    with started(tmp_path_factory.mktemp("flood")) as gw, httpx2.Client(timeout=30) as http:
        statuses = []
        for _ in range(100):
            try:
                statuses.append(rest(http, gw, "flood", "diagnostics.crash", {}).status_code)
            except httpx2.HTTPError:
                statuses.append(-1)
        assert set(statuses) <= {502, 503}, statuses
        assert gw.proc is not None and gw.proc.poll() is None
        assert rest(http, gw, "flood", "echo.ping", {}).status_code == 200
