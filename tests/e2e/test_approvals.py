"""Human approval of held calls against a real gateway, with the SDK's clients on every door.

The gateway requires approval for the ``utility`` scope (``echo.ping``); ``t-ap/approver`` holds
``firearm.approve``. A caller's call is held, shows up in the approver's inbox with its exact
arguments, and the caller gets the tool's result once approved (the approval then consumed),
``approval_rejected`` once rejected; the caller cannot approve itself; a changed argument is a
new approval; a caller that went away re-issues the same call and runs under the approval;
the REST and stateless doors answer ``approval_pending`` at once. The audit chain verifies.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx2
import pytest
import trio

from tests.e2e.clients import TRANSPORTS, error_of, grant, identity, mcp_client
from tests.harness import GatewayProcess, northstar_cli

TENANT = "t-ap"
APPROVER = identity(TENANT, "approver")
TOOL = "echo__ping"
WAIT_S = 20.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("approvals")) as gw:
        resp = httpx2.put(f"{gw.url}/v1/firearms/approvals/utility", headers=gw.admin_headers, json={})
        assert resp.status_code == 200, resp.text
        assert resp.json()["approver_firearm"] == "firearm.approve"
        grant(gw.url, TENANT, "approver", "firearm.approve")
        yield gw


def caller() -> str:
    return f"caller-{uuid.uuid4().hex[:8]}"


def inbox(url: str, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    resp = httpx2.get(f"{url}/v1/approvals", headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["approvals"])


async def pending_of(url: str, user: str, message: str) -> dict[str, Any]:
    """The pending approval of ``user``'s call with ``message``, as the approver sees it (bounded poll)."""
    with trio.fail_after(WAIT_S):
        while True:
            found = [a for a in await trio.to_thread.run_sync(lambda: inbox(url, APPROVER, state="pending"))
                     if a["user"] == user and a["arguments"].get("message") == message]
            if found:
                return found[0]
            await trio.sleep(0.05)


def decide(url: str, approval_id: str, action: str, headers: dict[str, str], **body: Any) -> httpx2.Response:
    return httpx2.post(f"{url}/v1/approvals/{approval_id}/{action}", headers=headers, json=body)


async def call_and_decide(gw: GatewayProcess, kind: str, action: str) -> tuple[Any, dict[str, Any], str]:
    user, message = caller(), f"deploy-{uuid.uuid4().hex[:6]}"
    results: list[Any] = []
    async with mcp_client(kind, gw.url, gw.data_dir, TENANT, user) as client, trio.open_nursery() as nursery:
        async def call() -> None:
            results.append(await client.call_tool(TOOL, {"message": message}))

        nursery.start_soon(call)
        approval = await pending_of(gw.url, user, message)
        resp = decide(gw.url, approval["id"], action, APPROVER, reason="checked")
        assert resp.status_code == 200, resp.text
    return results[0], approval, user


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_held_call_runs_once_approved_on_every_door(gw: GatewayProcess, kind: str) -> None:
    result, approval, user = await call_and_decide(gw, kind, "approve")
    assert not result.is_error, result
    assert result.structured_content["message"] == approval["arguments"]["message"]
    assert approval["principal"] == f"{TENANT}/{user}" and approval["tool"] == "echo.ping"
    assert approval["arguments"] == {"message": approval["arguments"]["message"], "data": None}
    assert len(approval["args_hash"]) == 64 and approval["scope"] == "utility"
    seen = httpx2.get(f"{gw.url}/v1/approvals/{approval['id']}", headers=identity(TENANT, user)).json()
    assert seen["state"] == "consumed" and seen["decided_by"] == f"{TENANT}/approver"


async def test_rejected_call_gets_approval_rejected(gw: GatewayProcess) -> None:
    result, approval, _ = await call_and_decide(gw, "streamable-2025", "reject")
    err = error_of(result)
    assert err["code"] == "approval_rejected" and err["details"]["approval_id"] == approval["id"]
    assert err["details"]["reason"] == "checked"
    again = decide(gw.url, approval["id"], "approve", APPROVER)
    assert again.status_code == 409 and again.json()["error"]["code"] == "approval_state"


async def test_self_approval_and_non_approvers_are_refused(gw: GatewayProcess) -> None:
    user, message = caller(), "self"
    me = identity(TENANT, user)
    resp = httpx2.post(f"{gw.url}/v1/tools/{TOOL}/call", headers=me, json={"arguments": {"message": message}})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "approval_pending"
    approval_id = resp.json()["error"]["details"]["approval_id"]
    grant(gw.url, TENANT, user, "firearm.approve")  # even an approver may not approve its own call
    own = decide(gw.url, approval_id, "approve", me)
    assert own.status_code == 403 and own.json()["error"]["code"] == "approval_self"
    outsider = decide(gw.url, approval_id, "approve", identity(TENANT, "bystander"))
    assert outsider.status_code == 404  # not theirs to see
    other_tenant = identity("t-other", "approver")
    grant(gw.url, "t-other", "approver", "firearm.approve")
    assert decide(gw.url, approval_id, "approve", other_tenant).status_code == 404
    unknown = decide(gw.url, "ap_0000000000000000_0000000000000000", "approve", APPROVER)
    assert unknown.status_code == 404


async def test_rest_door_reissue_and_changed_arguments(gw: GatewayProcess) -> None:
    me = identity(TENANT, caller())

    def call(message: str) -> httpx2.Response:
        return httpx2.post(f"{gw.url}/v1/tools/{TOOL}/call", headers=me, json={"arguments": {"message": message}})

    first = call("a").json()["error"]["details"]["approval_id"]
    assert call("a").json()["error"]["details"]["approval_id"] == first  # the same call: the same approval
    changed = call("b").json()["error"]["details"]["approval_id"]
    assert changed != first
    assert decide(gw.url, first, "approve", APPROVER).status_code == 200
    ran = call("a")
    assert ran.status_code == 200 and ran.json()["output"]["message"] == "a"
    again = call("a")  # consumed: the next identical call is held anew
    assert again.status_code == 409 and again.json()["error"]["details"]["approval_id"] not in (first, changed)


@pytest.mark.parametrize("kind", ["streamable-2025", "stdio"])
async def test_disconnected_caller_reissues_and_is_matched(gw: GatewayProcess, kind: str) -> None:
    user, message = caller(), f"reissue-{kind}"
    approval: dict[str, Any] = {}
    with trio.CancelScope() as gone:  # the client goes away, connection and all, while it waits
        async with (mcp_client(kind, gw.url, gw.data_dir, TENANT, user) as client,
                    trio.open_nursery() as nursery):
            nursery.start_soon(client.call_tool, TOOL, {"message": message})
            approval = await pending_of(gw.url, user, message)
            gone.cancel()
    assert decide(gw.url, approval["id"], "approve", APPROVER).status_code == 200
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, text: str | None) -> None:
        progress.append(value)

    async with mcp_client("streamable-2025", gw.url, gw.data_dir, TENANT, user) as client:
        result = await client.call_tool(TOOL, {"message": message}, progress_callback=on_progress)
    assert not result.is_error and result.structured_content["message"] == message
    seen = httpx2.get(f"{gw.url}/v1/approvals/{approval['id']}", headers=identity(TENANT, user)).json()
    assert seen["state"] == "consumed"


async def test_a_call_that_ran_after_its_caller_left_answers_the_reissue(gw: GatewayProcess) -> None:
    """With a progress token the session's wait outlives the connection: approved meanwhile, the
    call runs there, and the caller, back with a new client, gets that run's outcome (no new approval)."""
    user, message = caller(), "ran-while-away"

    async def on_progress(value: float, total: float | None, text: str | None) -> None:
        pass

    with trio.CancelScope() as gone:
        async with (mcp_client("streamable-2025", gw.url, gw.data_dir, TENANT, user) as client,
                    trio.open_nursery() as nursery):
            nursery.start_soon(partial(client.call_tool, TOOL, {"message": message}, progress_callback=on_progress))
            approval = await pending_of(gw.url, user, message)
            gone.cancel()
    assert decide(gw.url, approval["id"], "approve", APPROVER).status_code == 200

    def view() -> dict[str, Any]:
        resp = httpx2.get(f"{gw.url}/v1/approvals/{approval['id']}", headers=identity(TENANT, user))
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    with trio.fail_after(WAIT_S):  # the session's wait wakes, the call runs and its outcome is kept
        while not (seen := await trio.to_thread.run_sync(view))["result_kept"]:
            await trio.sleep(0.05)
    assert seen["state"] == "consumed" and "result" not in seen  # kept, never shown
    async with mcp_client("streamable-2025", gw.url, gw.data_dir, TENANT, user) as client:
        result = await client.call_tool(TOOL, {"message": message})  # the re-issue: that run's outcome
    assert not result.is_error and result.structured_content["message"] == message
    assert [a["id"] for a in inbox(gw.url, APPROVER) if a["user"] == user] == [approval["id"]]  # no new one
    again = httpx2.post(f"{gw.url}/v1/tools/{TOOL.replace('__', '.')}/call", headers=identity(TENANT, user),
                        json={"arguments": {"message": message}})
    assert again.status_code == 409  # given once: the same call again is a new call, held anew
    assert again.json()["error"]["details"]["approval_id"] != approval["id"]
    export = httpx2.get(f"{gw.url}/v1/audit/export", headers=gw.admin_headers)
    records = [json.loads(line)["record"] for line in export.text.splitlines()]
    steps = [r.get("action") for r in records
             if r.get("approval_id") == approval["id"] and r.get("event") == "approval"]
    assert steps == ["approve", "consume", "redeliver"]
    runs = [r for r in records if r.get("outcome") == "ok" and r.get("user") == user]  # (or combined decision)
    assert len(runs) == 1  # the tool ran once


async def test_waiting_caller_hears_progress(gw: GatewayProcess) -> None:
    user, message = caller(), "progress"
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, text: str | None) -> None:
        progress.append((value, text))

    results: list[Any] = []
    async with (mcp_client("streamable-2025", gw.url, gw.data_dir, TENANT, user) as client,
                trio.open_nursery() as nursery):
        async def call() -> None:
            results.append(await client.call_tool(TOOL, {"message": message}, progress_callback=on_progress))

        nursery.start_soon(call)
        approval = await pending_of(gw.url, user, message)
        with trio.fail_after(WAIT_S):
            while not progress:
                await trio.sleep(0.05)
        assert decide(gw.url, approval["id"], "approve", APPROVER).status_code == 200
    assert not results[0].is_error
    assert approval["id"] in (progress[0][1] or "")


def test_stateless_door_answers_pending_at_once(gw: GatewayProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": TOOL, "arguments": {"message": "s"}}}
    headers = {**identity(TENANT, caller()), "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": "2025-06-18"}
    resp = httpx2.post(f"{gw.url}/mcp/stateless", headers=headers, json=body)
    assert resp.status_code == 200, resp.text
    result = resp.json()["result"]
    assert result["isError"] and result["_meta"]["northstar/error"]["code"] == "approval_pending"


def test_cli_twins_list_show_and_decide(gw: GatewayProcess) -> None:
    me = identity(TENANT, caller())
    resp = httpx2.post(f"{gw.url}/v1/tools/{TOOL}/call", headers=me, json={"arguments": {"message": "cli"}})
    approval_id = resp.json()["error"]["details"]["approval_id"]
    listed = northstar_cli(gw.data_dir, "approvals", "list", "--state", "pending")
    assert listed.returncode == 0, listed.stderr
    assert approval_id in {a["id"] for a in json.loads(listed.stdout)["approvals"]}
    shown = northstar_cli(gw.data_dir, "approvals", "show", approval_id)
    assert json.loads(shown.stdout)["arguments"] == {"message": "cli", "data": None}
    own = northstar_cli(gw.data_dir, "approvals", "approve", approval_id, "--tenant", TENANT,
                        "--user", me["X-User-Id"])
    assert own.returncode == 1 and "approval_self" in own.stderr
    done = northstar_cli(gw.data_dir, "approvals", "reject", approval_id, "--tenant", TENANT, "--user", "approver",
                         "--reason", "not today")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "rejected"


async def test_an_unanswered_call_expires_after_the_ttl(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A gateway whose approvals last one second: the waiting caller gets approval_expired."""
    with GatewayProcess(tmp_path_factory.mktemp("approvals-ttl"), env={"NORTHSTAR_APPROVAL_TTL_S": "1"}) as short:
        resp = httpx2.put(f"{short.url}/v1/firearms/approvals/utility", headers=short.admin_headers, json={})
        assert resp.status_code == 200, resp.text
        async with mcp_client("sse", short.url, short.data_dir, TENANT, "late") as client:
            with trio.fail_after(WAIT_S):
                result = await client.call_tool(TOOL, {"message": "too late"})
        err = error_of(result)
        assert err["code"] == "approval_expired" and err["details"]["approval_id"].startswith("ap_")
        entries = httpx2.get(f"{short.url}/v1/audit", headers=short.admin_headers).json()["entries"]
        assert [e["approval_id"] for e in entries if e.get("action") == "expire"] == [err["details"]["approval_id"]]
        grant(short.url, TENANT, "approver", "firearm.approve")
        late = decide(short.url, err["details"]["approval_id"], "approve", APPROVER)
        assert late.status_code == 409 and late.json()["error"]["details"]["state"] == "expired"


def test_every_step_is_audited_and_the_chain_verifies(gw: GatewayProcess) -> None:
    entries = httpx2.get(f"{gw.url}/v1/audit", headers=gw.admin_headers, params={"limit": "1000"}).json()["entries"]
    actions = {e.get("action") for e in entries if e.get("event") == "approval"}
    assert {"approve", "reject", "consume"} <= actions
    assert any(e.get("decision") == "pending" and e.get("approval_id") for e in entries)
    assert any(e.get("decision") == "allow" and e.get("approval_id") for e in entries)
    report = httpx2.get(f"{gw.url}/v1/audit/verify", headers=gw.admin_headers).json()
    assert report["ok"], report
