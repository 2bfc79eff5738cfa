"""Who may claim to be whom, against real gateway processes (G3).

The default trusts no identity header, from any peer (a same-host reverse proxy included); no
header ever makes an admin, in any mode; the first start mints one bootstrap admin key into a
private file and says where it is; header trust is an explicit, loudly announced choice; admin
keys minted under the old default are refused until an operator confirms them.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from tests.harness import GatewayProcess, bearer, northstar_cli

SPOOFED = {"X-Tenant-Id": "t1", "X-User-Id": "admin"}
THE_REPRO = {"tenant": "t1", "user": "me", "admin": True}  # curl -H 'X-User-Id: admin' -d ... /v1/keys
MCP = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def envelope(resp: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert (err["code"], err["http_status"]) == (code, status)
    return err


@pytest.fixture(scope="module")
def default_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """``northstar serve`` exactly as ``make run`` starts it: nothing about identity configured."""
    with GatewayProcess(tmp_path_factory.mktemp("default"), auth_mode=None) as gw:
        yield gw


# -- the default ---------------------------------------------------------------------------------------
def test_the_repro_a_header_admin_cannot_mint_keys_by_default(default_gw: GatewayProcess) -> None:
    url = default_gw.url
    resp = httpx2.post(f"{url}/v1/keys", headers={**SPOOFED, "Host": "127.0.0.1"}, json=THE_REPRO)
    envelope(resp, 401, "unauthorized")
    for path in ("/v1/tools", "/v1/audit", "/v1/firearms/grants", "/v1/ops/runtime"):
        envelope(httpx2.get(f"{url}{path}", headers=SPOOFED), 401, "unauthorized")
    mcp = httpx2.post(f"{url}/mcp", headers={**MCP, **SPOOFED}, json=INIT)
    assert mcp.status_code == 401 and mcp.json()["error"]["data"]["code"] == "unauthorized"
    assert httpx2.get(f"{url}/health").status_code == 200  # still open
    keys = json.loads(northstar_cli(default_gw.data_dir, "keys", "list").stdout)["keys"]
    assert [k["label"] for k in keys] == ["bootstrap"]  # nothing was minted for "me"


def test_the_bootstrap_admin_key_is_private_printed_once_and_works(default_gw: GatewayProcess) -> None:
    path = default_gw.data_dir / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert re.fullmatch(r"nsk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", secret)
    log = default_gw.stderr_text()
    assert secret not in log and secret.split("_", 2)[2] not in log  # never logged
    announced = [json.loads(line) for line in default_gw.lines if f"admin key: {path}" in line]
    assert len(announced) == 1 and announced[0]["level"] == "warning" and announced[0]["admin_key_created"]
    assert "auth_mode=headers" not in log  # the default announces no header trust
    created = httpx2.post(f"{default_gw.url}/v1/keys", headers=bearer(secret),
                          json={"tenant": "t1", "user": "me"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["provenance"], body["minted_by"], body["admin"]) == ("api_key", "default/admin", False)
    me = httpx2.get(f"{default_gw.url}/v1/tools", headers=bearer(body["key"]))
    assert me.status_code == 200


def test_a_later_start_says_where_the_key_is_and_makes_no_other(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, auth_mode=None) as gw:
        first = gw.admin_key
    with GatewayProcess(tmp_path, auth_mode=None) as gw:
        assert (tmp_path / "admin.key").read_text().strip() == first
        [line] = [json.loads(x) for x in gw.lines if "admin key:" in x]
        assert line["level"] == "info" and line["admin_key_created"] is False
        assert httpx2.get(f"{gw.url}/v1/audit/verify", headers=bearer(first)).json()["ok"] is True
    keys = json.loads(northstar_cli(tmp_path, "keys", "list").stdout)["keys"]
    assert len(keys) == 1


async def forward(client: trio.SocketStream, upstream_port: int) -> None:
    """One connection of a same-host reverse proxy: bytes both ways, the upstream over loopback."""
    async with client, await trio.open_tcp_stream("127.0.0.1", upstream_port) as upstream:

        async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
            try:
                while data := await src.receive_some(65536):
                    await dst.send_all(data)
                await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream)
            nursery.start_soon(pump, upstream, client)


async def test_a_same_host_proxy_does_not_launder_outside_traffic(default_gw: GatewayProcess) -> None:
    """Everything a proxy on the gateway's host forwards arrives from 127.0.0.1 with a loopback
    Host: by default that earns no trust at all."""
    async with trio.open_nursery() as nursery:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, lambda s: forward(s, default_gw.port), [listener])
        proxy = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        outside = {**SPOOFED, "X-Forwarded-For": "203.0.113.7", "Host": f"127.0.0.1:{default_gw.port}"}
        async with httpx2.AsyncClient(timeout=30) as http:
            with trio.fail_after(30):
                minted = await http.post(f"{proxy}/v1/keys", headers=outside, json=THE_REPRO)
                envelope(minted, 401, "unauthorized")
                listed = await http.post(f"{proxy}/mcp", headers={**MCP, **outside}, json=INIT)
                assert listed.status_code == 401
                healthy = await http.get(f"{proxy}/health", headers={"Host": f"127.0.0.1:{default_gw.port}"})
                assert healthy.status_code == 200  # the proxy itself works
        nursery.cancel_scope.cancel()


def test_metrics_need_an_admin_credential(default_gw: GatewayProcess, tmp_path: Path) -> None:
    url = default_gw.url
    envelope(httpx2.get(f"{url}/metrics"), 401, "unauthorized")
    envelope(httpx2.get(f"{url}/metrics", headers=SPOOFED), 401, "unauthorized")
    user_key = httpx2.post(f"{url}/v1/keys", headers=default_gw.admin_headers,
                           json={"tenant": "t1", "user": "viewer"}).json()["key"]
    envelope(httpx2.get(f"{url}/metrics", headers=bearer(user_key)), 403, "admin_required")
    ok = httpx2.get(f"{url}/metrics", headers=default_gw.admin_headers)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in ok.text


# -- headers mode ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def headers_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("headers"), auth_mode=None, args=["--auth-mode", "headers"]) as gw:
        yield gw


def test_headers_mode_is_announced_loudly(headers_gw: GatewayProcess, tmp_path: Path) -> None:
    warnings = [json.loads(x) for x in headers_gw.lines if "auth_mode=headers" in x]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "anyone can act as any user" in warnings[0]["msg"]
    with GatewayProcess(tmp_path, auth_mode="headers") as by_env:  # NORTHSTAR_AUTH_MODE=headers, the same
        assert any("auth_mode=headers" in x and '"warning"' in x for x in by_env.lines)


def test_in_headers_mode_a_header_names_a_user_but_never_an_admin(headers_gw: GatewayProcess) -> None:
    url = headers_gw.url
    me = httpx2.post(f"{url}/v1/tools/echo.ping/call", headers=SPOOFED, json={"arguments": {"message": "hi"}})
    assert me.status_code == 200  # t1/admin is a user like any other
    envelope(httpx2.post(f"{url}/v1/keys", headers=SPOOFED, json=THE_REPRO), 403, "admin_required")
    for method, path in (("GET", "/v1/audit/verify"), ("GET", "/metrics"), ("GET", "/v1/ops/runtime"),
                         ("PUT", "/v1/firearms/bindings/x.y")):
        resp = httpx2.request(method, f"{url}{path}", headers=SPOOFED, json={"firearm": "firearm.x.y"})
        envelope(resp, 403, "admin_required")
    minted = httpx2.post(f"{url}/v1/keys", headers=headers_gw.admin_headers, json=THE_REPRO)
    assert minted.status_code == 201 and minted.json()["provenance"] == "api_key"


# -- admin keys minted under the old default ---------------------------------------------------------
def plant_legacy_admin_key(data_dir: Path) -> tuple[str, str]:
    """An admin key as the old default minted it for anyone sending ``X-User-Id: admin``: stored
    exactly as older versions stored keys (no provenance)."""
    from northstar.common.config import Settings
    from northstar.policy.auth import digest
    from northstar.storage import open_store, options_for

    key_id, secret = "0123456789abcdef", "L" * 43
    record = {"key_id": key_id, "tenant": "t1", "user": "me", "admin": True,
              "created_at": "2025-01-01T00:00:00+00:00", "digest": digest(secret), "label": None}

    async def main() -> None:
        settings = Settings(data_dir=data_dir)
        async with open_store(settings.resolved_store_url(), **options_for(settings)) as storage:
            await storage.store.save("_global", "api_keys", key_id, record, expected_version=0)

    trio.run(main)  # in a thread of its own: this helper runs outside the test's event loop
    return f"nsk_{key_id}_{secret}", key_id


async def test_an_old_admin_key_is_not_honoured_until_an_operator_adopts_it(tmp_path: Path) -> None:
    secret, key_id = await trio.to_thread.run_sync(plant_legacy_admin_key, tmp_path)
    with GatewayProcess(tmp_path, auth_mode=None) as gw:
        [warning] = [json.loads(x) for x in gw.lines if "not honoured until an operator confirms" in x]
        assert warning["level"] == "warning" and warning["unconfirmed_keys"] == [key_id]
        err = envelope(httpx2.post(f"{gw.url}/v1/keys", headers=bearer(secret), json=THE_REPRO), 403,
                       "key_not_confirmed")
        assert f"northstar keys adopt {key_id}" in err["message"]
        envelope(httpx2.get(f"{gw.url}/v1/tools", headers=bearer(secret)), 403, "key_not_confirmed")
        listed = {k["key_id"]: k for k in json.loads(northstar_cli(tmp_path, "keys", "list").stdout)["keys"]}
        assert listed[key_id]["confirmed"] is False and listed[key_id]["provenance"] is None
        adopted = northstar_cli(tmp_path, "keys", "adopt", key_id)
        assert adopted.returncode == 0, adopted.stderr
        assert json.loads(adopted.stdout)["provenance"] == "adopted"
        with trio.fail_after(10):  # a running gateway sees it within its key cache's 1 s
            while (resp := httpx2.get(f"{gw.url}/v1/audit/verify", headers=bearer(secret))).status_code == 403:
                await trio.sleep(0.1)
        assert resp.status_code == 200 and resp.json()["ok"] is True
        action = [e for e in httpx2.get(f"{gw.url}/v1/audit", headers=gw.admin_headers).json()["entries"]
                  if e.get("action") == "key_adopt"]
        assert [a["key_id"] for a in action] == [key_id]


# -- several processes on one store ----------------------------------------------------------------
def start_together(procs: list[GatewayProcess]) -> None:
    errors: list[BaseException] = []

    def start(p: GatewayProcess) -> None:
        try:
            p.start()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]


def test_two_gateways_starting_together_on_one_data_dir_make_one_key(tmp_path: Path) -> None:
    procs = [GatewayProcess(tmp_path, auth_mode=None) for _ in range(2)]
    try:
        start_together(procs)
        secret = (tmp_path / "admin.key").read_text().strip()
        for gw in procs:  # both say where the key is (or that the other made it); it works on both
            assert any("admin key:" in x for x in gw.lines)
            assert httpx2.get(f"{gw.url}/v1/audit/verify", headers=bearer(secret)).json()["ok"] is True
        created = [x for gw in procs for x in gw.lines if '"admin_key_created": true' in x]
        assert len(created) == 1
    finally:
        for gw in procs:
            gw.__exit__(None, None, None)
    live = json.loads(northstar_cli(tmp_path, "keys", "list").stdout)["keys"]
    assert [k["label"] for k in live] == ["bootstrap"]
    assert not list(tmp_path.glob(".admin.key.*"))


@pytest.mark.postgres
def test_replicas_on_postgres_share_one_bootstrap_key(tmp_path: Path) -> None:
    from tests.pg import base_url, fresh_schema, pg_unavailable_reason, schema_url

    if reason := pg_unavailable_reason():
        pytest.skip(reason)
    schema = fresh_schema("boot")
    env = {"NORTHSTAR_STORE_URL": schema_url(base_url(), schema),
           "NORTHSTAR_AUDIT_KEY_FILE": str(tmp_path / "audit.key")}  # replicas share the audit key
    procs = [GatewayProcess(tmp_path / f"replica{i}", auth_mode=None, env=env) for i in range(2)]
    try:
        start_together(procs)
        files = [p.data_dir / "admin.key" for p in procs if (p.data_dir / "admin.key").exists()]
        assert len(files) == 1  # only the replica that won the compare-and-set has the file
        secret = files[0].read_text().strip()
        for gw in procs:
            assert httpx2.get(f"{gw.url}/v1/audit/verify", headers=bearer(secret)).json()["ok"] is True
        loser = next(p for p in procs if p.data_dir / "admin.key" not in files)
        assert any("admin key: not in" in x for x in loser.lines)
    finally:
        for gw in procs:
            gw.__exit__(None, None, None)
        import subprocess

        subprocess.run(["psql", base_url(), "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"], capture_output=True,
                       check=False, timeout=30)


def test_the_audit_verify_cli_reports_the_seal(default_gw: GatewayProcess) -> None:
    done = northstar_cli(default_gw.data_dir, "audit", "verify")
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"] is True and report["sealed"] is True
    assert set(report) == {"ok", "count", "first_bad_seq", "reason", "sealed", "anchors", "anchored_seq"}
    assert os.path.exists(default_gw.data_dir / "audit.key")
