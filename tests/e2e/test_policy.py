"""ENG-07 acceptance against a real gateway: firearms over REST and MCP on every transport,
admin-only policy changes and their audit records, the CLI twins, grant edge cases (B4),
audit integrity under concurrent load (B6), failing closed when the audit log cannot commit
(B5), and how tools/list shows what the caller may not call."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from tests.e2e.clients import TRANSPORTS, error_of, identity, mcp_client
from tests.harness import GatewayProcess, admin_headers, northstar_cli

FA = "firearm.media.write"
WRITE_ARGS = {"name": "note.txt", "mime_type": "text/plain", "content_text": "hi"}
ENVELOPE_KEYS = {"code", "message", "http_status", "request_id", "details"}
EXPIRED = ("t-expired", "u-expired")  # seeded before the gateway starts: a grant that has run out


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def seed_expired_grant(data_dir: Path) -> None:
    """Persist a grant whose expiry has passed (the API refuses to create one in the past)."""
    from northstar.policy.firearms import FirearmsService
    from northstar.storage import open_store

    async def main() -> None:
        async with open_store(f"sqlite:///{data_dir / 'northstar.db'}") as storage:
            past = datetime.now(UTC) - timedelta(hours=1)
            svc = FirearmsService(storage.store, clock=lambda: (past - timedelta(days=1)).timestamp())
            await svc.grant(*EXPIRED, FA, granted_by="seed", expires_at=past.isoformat())

    trio.run(main)


def in_parallel(fn: Any, items: list[Any]) -> None:
    """Run ``fn(item)`` for every item in threads; re-raise the first failure."""
    errors: list[BaseException] = []

    def run(item: Any) -> None:
        try:
            fn(item)
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GatewayProcess]]:
    """The module's gateways, started side by side: ``main`` (default settings, shared by most
    tests; its ``mark`` listing is the default), ``hide`` and ``show`` (tools/list modes) and
    ``fail_closed`` (its store gets locked: no other test may use it)."""
    data = tmp_path_factory.mktemp("policy")
    seed_expired_grant(data)
    procs = {"main": GatewayProcess(data), "fail_closed": GatewayProcess(tmp_path_factory.mktemp("fail_closed"))}
    for mode in ("hide", "show"):
        procs[mode] = GatewayProcess(tmp_path_factory.mktemp(mode), env={"NORTHSTAR_UNAUTHORIZED_TOOLS": mode})
    try:
        in_parallel(GatewayProcess.start, list(procs.values()))
        yield procs
    finally:
        in_parallel(lambda p: p.__exit__(None, None, None), list(procs.values()))


@pytest.fixture(scope="module")
def gw(gateways: dict[str, GatewayProcess]) -> GatewayProcess:
    return gateways["main"]


# -- helpers ---------------------------------------------------------------------------------
def call(url: str, tenant: str, user: str, name: str, args: dict[str, Any], **headers: str) -> httpx2.Response:
    return httpx2.post(f"{url}/v1/tools/{name}/call", json={"arguments": args},
                       headers={**identity(tenant, user), **headers}, timeout=30)


def admin(method: str, url: str, **kw: Any) -> httpx2.Response:
    return httpx2.request(method, url, headers=admin_headers(url), timeout=30, **kw)


def grant(url: str, tenant: str, user: str, firearm: str = FA, **extra: Any) -> httpx2.Response:
    return admin("POST", f"{url}/v1/firearms/grants",
                 json={"tenant": tenant, "user": user, "firearm": firearm, "reason": "test", **extra})


def revoke(url: str, tenant: str, user: str, firearm: str = FA) -> httpx2.Response:
    return admin("DELETE", f"{url}/v1/firearms/grants/{tenant}/{user}/{firearm}")


def audit(url: str, **filters: Any) -> list[dict[str, Any]]:
    """Every matching entry (pages through the log)."""
    out: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params = {**filters, "limit": "1000", **({"after_seq": str(after)} if after is not None else {})}
        resp = admin("GET", f"{url}/v1/audit", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        out.extend(body["entries"])
        if body["next_after_seq"] is None:
            return out
        after = body["next_after_seq"]


def last_seq(url: str) -> int:
    entries = audit(url)
    return entries[-1]["seq"] if entries else 0


def assert_envelope(resp: httpx2.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS
    err = body["error"]
    assert (err["code"], err["http_status"]) == (code, status)
    assert resp.headers["x-request-id"] == err["request_id"]
    return dict(err)


def assets(url: str, tenant: str) -> list[dict[str, Any]]:
    resp = call(url, tenant, "reader", "media_v2.list_assets", {})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["output"]["assets"])


def decisions(url: str, **filters: Any) -> list[dict[str, Any]]:
    return [e for e in audit(url, **filters) if e.get("event") == "decision"]


def assert_denied_once(url: str, tenant: str, user: str, request_id: str) -> dict[str, Any]:
    """Exactly one record for the request: a deny decision at the firearm gate; nothing ran."""
    mine = [e for e in audit(url, tenant=tenant, user=user) if e.get("request_id") == request_id]
    assert len(mine) == 1, mine
    rec = mine[0]
    assert (rec["event"], rec["decision"], rec["gate"], rec["code"]) == ("decision", "deny", "firearm",
                                                                          "firearm_required")
    assert (rec["scope"], rec["firearm"]) == ("media.write", FA)
    return rec


# -- 1, 2: bindings and inventory ---------------------------------------------------------------
def test_shipped_default_binding_and_inventory(gw: GatewayProcess) -> None:
    bindings = httpx2.get(f"{gw.url}/v1/firearms/bindings").json()["bindings"]
    assert {"scope": "media.write", "firearm": FA} in bindings
    assert not [b for b in bindings if b["scope"] == "media.read"]
    tools = {t["tool_id"]: t for t in httpx2.get(f"{gw.url}/v1/tools").json()["tools"]}
    scopes = {s["name"]: s for s in tools["media_v2"]["scopes"]}
    assert scopes["media.write"]["firearm"] == FA
    assert scopes["media.read"]["firearm"] is None
    assert {o["operation"] for o in scopes["media.write"]["operations"]} == {"create_asset", "delete_asset"}
    assert all(s["firearm"] is None for s in tools["echo"]["scopes"])


def test_admin_binds_media_write_and_it_is_audited(gw: GatewayProcess) -> None:
    before = last_seq(gw.url)
    resp = admin("PUT", f"{gw.url}/v1/firearms/bindings/media.write", json={"firearm": FA})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["scope"], body["firearm"]) == ("media.write", FA)
    [rec] = [e for e in audit(gw.url, after_seq=before) if e.get("event") == "policy"]
    assert (rec["action"], rec["scope"], rec["firearm"], rec["seq"]) == ("bind", "media.write", FA, body["audit_seq"])
    assert rec["user"] == "admin"


# -- 3, 4, 5 over REST ---------------------------------------------------------------------------
def test_firearm_flow_over_rest(gw: GatewayProcess) -> None:
    tenant, user = fresh("t"), fresh("u")
    rid = fresh("req")
    denied = call(gw.url, tenant, user, "media_v2.create_asset", WRITE_ARGS, **{"X-Request-Id": rid})
    err = assert_envelope(denied, 403, "firearm_required")
    assert err["request_id"] == rid
    assert {k: err["details"][k] for k in ("scope", "firearm")} == {"scope": "media.write", "firearm": FA}
    rec = assert_denied_once(gw.url, tenant, user, rid)
    # the caller's audit_seq numbers its own records (admins see the global seq beside it)
    assert err["details"]["audit_seq"] == rec["tenant_seq"] and rec["transport"] == "http"
    assert assets(gw.url, tenant) == []
    assert not [e for e in audit(gw.url, tenant=tenant, user=user) if e.get("event") == "outcome"]

    read = call(gw.url, tenant, user, "media_v2.list_assets", {})
    assert read.status_code == 200 and read.json()["output"]["assets"] == []

    assert grant(gw.url, tenant, user).status_code == 201
    created = call(gw.url, tenant, user, "media_v2.create_asset", WRITE_ARGS)
    assert created.status_code == 200, created.text
    assert [a["asset_id"] for a in assets(gw.url, tenant)] == [created.json()["output"]["asset_id"]]
    assert call(gw.url, tenant, user, "media_v2.list_assets", {}).status_code == 200

    assert revoke(gw.url, tenant, user).status_code == 200
    rid2 = fresh("req")
    again = call(gw.url, tenant, user, "media_v2.create_asset", WRITE_ARGS, **{"X-Request-Id": rid2})
    assert_envelope(again, 403, "firearm_required")
    assert_denied_once(gw.url, tenant, user, rid2)
    assert len(assets(gw.url, tenant)) == 1
    assert len(decisions(gw.url, tenant=tenant, user=user, decision="deny")) == 2


# -- 3, 4, 5 over MCP, every transport -----------------------------------------------------------
def transport_name(kind: str) -> str:
    return {"stdio": "stdio", "sse": "sse"}.get(kind, "streamable_http")


async def deny_write(client: Any, url: str, tenant: str, user: str, kind: str) -> None:
    denied = await client.call_tool("media_v2__create_asset", WRITE_ARGS)
    assert denied.is_error
    err = error_of(denied)
    assert (err["code"], err["http_status"]) == ("firearm_required", 403)
    assert err["details"] == {"scope": "media.write", "firearm": FA}
    assert json.loads(denied.content[0].text) == {"error": err}
    rec = await trio.to_thread.run_sync(assert_denied_once, url, tenant, user, err["request_id"])
    assert rec["transport"] == transport_name(kind)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_firearm_flow_over_mcp(gw: GatewayProcess, kind: str) -> None:
    tenant, user = fresh("t"), fresh("u")
    url, data = gw.url, gw.data_dir
    with trio.fail_after(90):
        async with mcp_client(kind, url, data, tenant, user) as client:
            await deny_write(client, url, tenant, user, kind)
            read = await client.call_tool("media_v2__list_assets", {})
            assert not read.is_error and read.structured_content["assets"] == []
            if kind != "stdio":  # a grant takes effect on the next call of a live session
                assert (await trio.to_thread.run_sync(grant, url, tenant, user)).status_code == 201
                created = await client.call_tool("media_v2__create_asset", WRITE_ARGS)
                assert not created.is_error, created.structured_content
                assert not (await client.call_tool("media_v2__list_assets", {})).is_error
                # ...and so does a revoke (B4: revoked mid-session)
                assert (await trio.to_thread.run_sync(revoke, url, tenant, user)).status_code == 200
                await deny_write(client, url, tenant, user, kind)
        if kind == "stdio":  # a stdio process loads policy at start: change it with the CLI first
            done = await trio.to_thread.run_sync(northstar_cli, data, "firearms", "grant", tenant, user, FA)
            assert done.returncode == 0, done.stderr
            async with mcp_client(kind, url, data, tenant, user) as client:
                created = await client.call_tool("media_v2__create_asset", WRITE_ARGS)
                assert not created.is_error, created.structured_content
            done = await trio.to_thread.run_sync(northstar_cli, data, "firearms", "revoke", tenant, user, FA)
            assert done.returncode == 0, done.stderr
            async with mcp_client(kind, url, data, tenant, user) as client:
                await deny_write(client, url, tenant, user, kind)
    found = await trio.to_thread.run_sync(assets, url, tenant)
    assert len(found) == 1  # the one granted write, and nothing from the denied ones
    entries = await trio.to_thread.run_sync(lambda: audit(url, tenant=tenant, user=user))
    outcomes = [e for e in entries if e.get("event") == "outcome"]
    assert len(outcomes) == 1 and outcomes[0]["operation"] == "create_asset" and outcomes[0]["outcome"] == "ok"
    assert len([e for e in entries if e.get("decision") == "deny"]) == 2


# -- 6: policy changes need admin, and are audited -------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/firearms/bindings/x", {"firearm": "firearm.x.y"}),
        ("DELETE", "/v1/firearms/bindings/media.write", None),
        ("POST", "/v1/firearms/grants", {"tenant": "t", "user": "u", "firearm": FA}),
        ("DELETE", f"/v1/firearms/grants/t/u/{FA}", None),
        ("POST", "/v1/keys", {"tenant": "t", "user": "u", "admin": True}),
        ("DELETE", "/v1/keys/0123456789abcdef", None),
        ("GET", "/v1/audit/verify", None),  # walks every tenant's records
    ],
)
def test_policy_changes_need_admin(gw: GatewayProcess, method: str, path: str, body: Any) -> None:
    before = last_seq(gw.url)
    resp = httpx2.request(method, f"{gw.url}{path}", json=body, headers=identity("acme", "mallory"))
    assert_envelope(resp, 403, "admin_required")
    assert not [e for e in audit(gw.url, after_seq=before) if e.get("event") == "policy"]
    assert {"scope": "media.write", "firearm": FA} in httpx2.get(f"{gw.url}/v1/firearms/bindings").json()["bindings"]


def test_every_policy_change_writes_a_policy_record(gw: GatewayProcess) -> None:
    scope, firearm = f"scratch.{uuid.uuid4().hex[:8]}", f"firearm.scratch.{uuid.uuid4().hex[:8]}"
    tenant, user = fresh("t"), fresh("u")
    before = last_seq(gw.url)
    steps = [
        admin("PUT", f"{gw.url}/v1/firearms/bindings/{scope}", json={"firearm": firearm}),
        grant(gw.url, tenant, user, firearm),
        revoke(gw.url, tenant, user, firearm),
        admin("DELETE", f"{gw.url}/v1/firearms/bindings/{scope}"),
    ]
    assert [r.status_code for r in steps] == [200, 201, 200, 200], [r.text for r in steps]
    records = [e for e in audit(gw.url, after_seq=before) if e.get("event") == "policy"]
    assert [r["action"] for r in records] == ["bind", "grant", "revoke", "unbind"]
    assert [r["seq"] for r in records] == [s.json()["audit_seq"] for s in steps]
    assert all(r["principal"].endswith("/admin") and r["transport"] == "http" for r in records)
    assert (records[1]["grant_tenant"], records[1]["grant_user"], records[1]["firearm"]) == (tenant, user, firearm)
    assert not [b for b in httpx2.get(f"{gw.url}/v1/firearms/bindings").json()["bindings"] if b["scope"] == scope]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", "/v1/firearms/bindings/media.write", {"firearm": "Firearm.Media"}, 400, "validation_error"),
        ("PUT", "/v1/firearms/bindings/media.write", {}, 400, "validation_error"),
        ("PUT", "/v1/firearms/bindings/Bad%20Scope", {"firearm": FA}, 400, "validation_error"),
        ("POST", "/v1/firearms/grants", {"tenant": "t t", "user": "u", "firearm": FA}, 400, "validation_error"),
        ("POST", "/v1/firearms/grants", {"tenant": "t", "user": "u", "firearm": FA,
                                         "expires_at": "2001-01-01T00:00:00Z"}, 400, "validation_error"),
        ("DELETE", "/v1/firearms/grants/t/nobody/firearm.media.write", None, 404, "not_found"),
        ("DELETE", "/v1/firearms/bindings/never.bound", None, 404, "not_found"),
    ],
)
def test_bad_policy_changes_are_refused_and_not_audited(
    gw: GatewayProcess, method: str, path: str, body: Any, status: int, code: str
) -> None:
    before = last_seq(gw.url)
    assert_envelope(admin(method, f"{gw.url}{path}", json=body), status, code)
    assert not [e for e in audit(gw.url, after_seq=before) if e.get("event") == "policy"]
    assert {"scope": "media.write", "firearm": FA} in httpx2.get(f"{gw.url}/v1/firearms/bindings").json()["bindings"]


def test_cli_twins_change_policy_and_audit_it(tmp_path: Path) -> None:
    def cli(*args: str, ok: bool = True) -> dict[str, Any]:
        done = northstar_cli(tmp_path, *args, timeout=30)
        assert (done.returncode == 0) is ok, (args, done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout) if ok else {"stderr": done.stderr, "code": done.returncode}

    bound = cli("firearms", "bind", "reports.export", "firearm.reports.export")
    assert (bound["scope"], bound["firearm"]) == ("reports.export", "firearm.reports.export")
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    granted = cli("firearms", "grant", "acme", "alice", "firearm.reports.export", "--reason", "audit-42",
                  "--expires-at", expires)
    assert (granted["tenant"], granted["user"], granted["reason"]) == ("acme", "alice", "audit-42")
    listed = cli("firearms", "list")
    assert {"scope": "reports.export", "firearm": "firearm.reports.export"} in listed["bindings"]
    assert [(g["tenant"], g["user"], g["active"]) for g in listed["grants"]] == [("acme", "alice", True)]
    assert cli("firearms", "revoke", "acme", "alice", "firearm.reports.export")["revoked"] is True
    assert cli("firearms", "unbind", "reports.export")["firearm"] is None
    listed = cli("firearms", "list")
    assert listed["grants"] == [] and not [b for b in listed["bindings"] if b["scope"] == "reports.export"]

    refused = cli("firearms", "revoke", "acme", "alice", "firearm.reports.export", ok=False)
    assert refused["code"] == 1 and "not_found" in refused["stderr"] and "Traceback" not in refused["stderr"]
    refused = cli("firearms", "bind", "reports.export", "not-a-firearm", ok=False)
    assert refused["code"] == 1 and "validation_error" in refused["stderr"]

    policy = cli("audit", "tail", "-n", "4")["entries"]  # the last four: the only four
    assert [(p["seq"], p["event"], p["action"]) for p in policy] == [
        (1, "policy", "bind"), (2, "policy", "grant"), (3, "policy", "revoke"), (4, "policy", "unbind")]
    assert all(p["principal"].startswith("cli/") and p["transport"] == "cli" for p in policy)
    assert policy[1]["reason"] == "audit-42" and policy[1]["expires_at"] == expires
    assert cli("audit", "verify")["ok"] is True


# -- B4: grant edge cases over REST -----------------------------------------------------------------
@pytest.mark.parametrize("near_miss", ["firearm.media.writ", "firearm.media.write.all", "firearm.media",
                                       "firearm.media.write-", "firearm.media.read", "firearm.media_write"])
def test_near_miss_grants_are_denied(gw: GatewayProcess, near_miss: str) -> None:
    tenant, user = fresh("t"), fresh("u")
    assert grant(gw.url, tenant, user, near_miss).status_code == 201
    assert_envelope(call(gw.url, tenant, user, "media_v2.create_asset", WRITE_ARGS), 403, "firearm_required")


@pytest.mark.parametrize("invalid", ["Firearm.media.write", "firearm.media.write ", "firearm.médïa.write",
                                     "media.write", "firearm.media.write\n", ""])
def test_invalid_firearm_names_cannot_be_granted(gw: GatewayProcess, invalid: str) -> None:
    tenant, user = fresh("t"), fresh("u")
    assert_envelope(grant(gw.url, tenant, user, invalid), 400, "validation_error")
    assert_envelope(call(gw.url, tenant, user, "media_v2.create_asset", WRITE_ARGS), 403, "firearm_required")


def test_another_tenants_or_users_grant_does_not_count(gw: GatewayProcess) -> None:
    tenant, other_tenant, user = fresh("t"), fresh("t"), fresh("u")
    assert grant(gw.url, other_tenant, user).status_code == 201
    assert grant(gw.url, tenant, fresh("u")).status_code == 201
    assert_envelope(call(gw.url, tenant, user, "media_v2.create_asset", WRITE_ARGS), 403, "firearm_required")
    assert call(gw.url, other_tenant, user, "media_v2.create_asset", WRITE_ARGS).status_code == 200
    assert assets(gw.url, tenant) == []


def test_an_expired_grant_is_denied(gw: GatewayProcess) -> None:
    tenant, user = EXPIRED
    listed = admin("GET", f"{gw.url}/v1/firearms/grants", params={"tenant": tenant}).json()["grants"]
    assert [(g["user"], g["firearm"], g["active"]) for g in listed] == [(user, FA, False)]
    assert_envelope(call(gw.url, tenant, user, "media_v2.create_asset", WRITE_ARGS), 403, "firearm_required")


def test_a_user_sees_only_their_own_grants(gw: GatewayProcess) -> None:
    tenant, alice, bob = fresh("t"), fresh("u"), fresh("u")
    assert grant(gw.url, tenant, alice).status_code == 201
    assert grant(gw.url, tenant, bob).status_code == 201
    mine = httpx2.get(f"{gw.url}/v1/firearms/grants", params={"tenant": "other"},
                      headers=identity(tenant, alice)).json()["grants"]
    assert [(g["tenant"], g["user"]) for g in mine] == [(tenant, alice)]


# -- 7 / B6: audit integrity under concurrent load -----------------------------------------------------
async def test_audit_under_concurrent_load(gw: GatewayProcess) -> None:
    tenant = fresh("load")
    users = [f"u{i}" for i in range(8)]
    writer = users[0]
    assert (await trio.to_thread.run_sync(grant, gw.url, tenant, writer)).status_code == 201
    plans = [  # (name, arguments, expected status)
        ("echo.ping", {"message": "hi"}, 200),
        ("media_v2.create_asset", WRITE_ARGS, 403),
        ("echo.ping", {"message": 123}, 400),
        ("no_such.tool", {}, 404),
    ]
    calls: list[tuple[str, str, str, dict[str, Any], int]] = []
    for i in range(200):
        user = users[i % len(users)]
        name, args, status = plans[i % len(plans)]
        if user == writer and name == "media_v2.create_asset":
            status = 200
        calls.append((f"load-{uuid.uuid4().hex}", user, name, args, status))
    got: dict[str, int] = {}

    async def one(http: httpx2.AsyncClient, rid: str, user: str, name: str, args: dict[str, Any]) -> None:
        resp = await http.post(f"{gw.url}/v1/tools/{name}/call", json={"arguments": args},
                               headers={**identity(tenant, user), "X-Request-Id": rid})
        got[rid] = resp.status_code

    with trio.fail_after(60):
        async with httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=200)) as http, \
                trio.open_nursery() as nursery:
            for rid, user, name, args, _ in calls:
                nursery.start_soon(one, http, rid, user, name, args)
    assert got == {rid: status for rid, _, _, _, status in calls}

    entries = await trio.to_thread.run_sync(lambda: audit(gw.url, tenant=tenant))
    decided = [e for e in entries if e.get("event") == "decision"]
    assert len(decided) == len(calls)
    by_request = {e["request_id"]: e for e in decided}
    assert sorted(by_request) == sorted(rid for rid, *_ in calls)  # each request exactly once
    for rid, _, name, _, status in calls:
        assert by_request[rid]["decision"] == ("allow" if status == 200 else "deny"), (name, by_request[rid])
    outcomes = [e for e in entries if e.get("event") == "outcome"]
    assert len(outcomes) == len([c for c in calls if c[2] == "media_v2.create_asset" and c[4] == 200])

    everything = await trio.to_thread.run_sync(audit, gw.url)
    seqs = [e["seq"] for e in everything]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(everything))
    report = (await trio.to_thread.run_sync(admin, "GET", f"{gw.url}/v1/audit/verify")).json()
    assert report["ok"] is True and report["count"] >= len(seqs)
    done = await trio.to_thread.run_sync(northstar_cli, gw.data_dir, "audit", "verify")
    assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True, done.stdout + done.stderr


# -- 8 / B5: fail closed when the audit log cannot commit -----------------------------------------------
class WriteLock:
    """Another process's write transaction on the gateway's database, held until released."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)

    def __enter__(self) -> WriteLock:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


async def test_fail_closed_when_the_audit_log_cannot_commit(gateways: dict[str, GatewayProcess]) -> None:
    tenant, writer, other = fresh("t"), "writer", "other"
    gw = gateways["fail_closed"]
    with trio.fail_after(60):
        await trio.to_thread.run_sync(fail_closed_setup, gw.url, tenant, writer)
        before = await trio.to_thread.run_sync(audit, gw.url)
        async with mcp_client("streamable-2026", gw.url, gw.data_dir, tenant, writer) as client:
            with WriteLock(gw.data_dir / "northstar.db"):
                await trio.to_thread.run_sync(fail_closed_discover, gw.url, tenant, writer)
                refused = await client.call_tool("echo__ping", {})  # the same verdict over MCP
                assert refused.is_error
                assert error_of(refused)["code"] == "audit_unavailable"
                await trio.to_thread.run_sync(fail_closed_refused, gw.url, tenant, writer, other)
            # Released. A client that honours Retry-After gets through on a retry: the first
            # call after the probe interval is let through as a probe, commits, and the
            # gateway is healthy again.
            while (resp := await trio.to_thread.run_sync(call, gw.url, tenant, writer, "echo.ping", {})) \
                    .status_code == 503:
                assert resp.json()["error"]["code"] == "audit_unavailable"
                await trio.sleep(int(resp.headers["retry-after"]))
            assert resp.status_code == 200, resp.text
            assert not (await client.call_tool("echo__ping", {})).is_error
        await trio.to_thread.run_sync(fail_closed_recovered, gw.url, tenant, writer, other, before)


def fail_closed_setup(url: str, tenant: str, writer: str) -> None:
    assert grant(url, tenant, writer).status_code == 201
    assert call(url, tenant, writer, "echo.ping", {}).status_code == 200


ATTEMPTS = [
    ("writer", "media_v2.create_asset", WRITE_ARGS),  # allowed by policy: must not run
    ("writer", "echo.ping", {"message": "read"}),
    ("other", "media_v2.create_asset", WRITE_ARGS),  # denied by policy, but the denial can't be recorded
]


def fail_closed_discover(url: str, tenant: str, writer: str) -> None:
    # The first call finds out: its decision record waits out the store's busy timeout.
    resp = call(url, tenant, writer, "media_v2.create_asset", WRITE_ARGS)
    err = assert_envelope(resp, 503, "audit_unavailable")
    assert resp.headers["retry-after"] == "1" and err["details"]["retry_after"] == 1


def fail_closed_refused(url: str, tenant: str, writer: str, other: str) -> None:
    for user, name, args in ATTEMPTS:  # then every call is refused, never allowed
        resp = call(url, tenant, user, name, args)
        assert_envelope(resp, 503, "audit_unavailable")
        assert int(resp.headers["retry-after"]) >= 1
    health = httpx2.get(f"{url}/health")
    assert health.status_code == 503 and health.json()["audit"] == "unavailable"


def fail_closed_recovered(url: str, tenant: str, writer: str, other: str, before: list[dict[str, Any]]) -> None:
    assert httpx2.get(f"{url}/health").json()["status"] == "ok"
    assert_envelope(call(url, tenant, other, "media_v2.create_asset", WRITE_ARGS), 403, "firearm_required")
    assert assets(url, tenant) == []  # the allowed write never ran
    after = audit(url)
    assert after[: len(before)] == before  # nothing was lost or rewritten
    assert not [e for e in after[len(before):] if e.get("operation") == "create_asset" and e["user"] == writer]
    assert admin("GET", f"{url}/v1/audit/verify").json()["ok"] is True


# -- 9: tools/list marking ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def by_mode(gateways: dict[str, GatewayProcess]) -> dict[str, GatewayProcess]:
    return {"mark": gateways["main"], "hide": gateways["hide"], "show": gateways["show"]}


WRITE_OPS = {"media_v2__create_asset", "media_v2__delete_asset"}
READ_OPS = {"media_v2__get_asset", "media_v2__list_assets", "echo__ping"}


@pytest.mark.parametrize("mode", ["mark", "hide", "show"])
async def test_tools_list_marks_hides_or_shows_what_the_caller_lacks(
    by_mode: dict[str, GatewayProcess], mode: str
) -> None:
    gw = by_mode[mode]
    tenant, user = fresh("t"), fresh("u")
    kind = "streamable-2026" if mode != "mark" else "streamable-2025"
    with trio.fail_after(60):
        async with mcp_client(kind, gw.url, gw.data_dir, tenant, user) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            if mode == "hide":
                assert not WRITE_OPS & set(tools) and set(tools) >= READ_OPS
            else:
                assert set(tools) >= WRITE_OPS | READ_OPS
            for name in WRITE_OPS & set(tools):
                meta = tools[name].meta or {}
                assert meta["northstar/firearm"] == FA
                if mode == "mark":
                    assert meta["northstar/callable"] is False
                    assert f"requires firearm {FA}" in (tools[name].description or "")
                else:
                    assert "northstar/callable" not in meta
                    assert "requires firearm" not in (tools[name].description or "")
            for name in READ_OPS:
                assert "northstar/callable" not in (tools[name].meta or {})

            assert (await trio.to_thread.run_sync(grant, gw.url, tenant, user)).status_code == 201
            granted = {t.name: t for t in (await client.list_tools()).tools}
            assert set(granted) >= WRITE_OPS | READ_OPS
            for name in WRITE_OPS:
                assert "northstar/callable" not in (granted[name].meta or {})
                assert "requires firearm" not in (granted[name].description or "")
            # hidden or marked, the verdict of a call does not depend on the listing
            assert not (await client.call_tool("media_v2__create_asset", WRITE_ARGS)).is_error
