"""The console's Approvals inbox in a real browser: an SDK client's call waits, held for approval;
an approver signed in to the console sees the caller, the tool and the exact arguments, and
approves it through the REST API (with the CSRF token); the waiting client gets the result.
The caller, signed in too, sees its own held call but no decision buttons help it: the server
refuses a self-approval."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import expect

from tests.console.kit import expected_errors, mint_key, open_tab, rest
from tests.e2e.clients import mcp_client
from tests.harness import GatewayProcess, bearer
from tests.reliability.kit import wait_until

TENANT = "t-inbox"
CALL_WAIT_S = 60.0


def waiting_call(gw: GatewayProcess, key: str, message: str, out: list[Any]) -> threading.Thread:
    """An SDK client (Streamable HTTP) calling echo.ping in its own thread; it waits while held."""
    async def call() -> Any:
        with trio.fail_after(CALL_WAIT_S):
            async with mcp_client("streamable-2025", gw.url, gw.data_dir, TENANT, "alice",
                                  headers=bearer(key)) as client:
                return await client.call_tool("echo__ping", {"message": message})

    thread = threading.Thread(target=lambda: out.append(trio.run(call)), daemon=True)
    thread.start()
    return thread


def test_an_admin_requires_approval_and_the_sandbox_simulates_it(browser: Any, gateway: GatewayProcess) -> None:
    tab = open_tab(browser, gateway)
    tab.sign_in(gateway.admin_key)
    page = tab.page
    tab.goto("/console/policy")
    page.fill("#approval-scope", "utility")
    page.click("#require-approval")
    expect(page.locator("#approval-rule-table tr", has_text="utility")).to_contain_text("firearm.approve")
    tab.goto("/console/")
    expect(page.locator("#tool-echo tr", has_text="utility")).to_contain_text("required: firearm.approve")
    tab.goto("/console/sandbox")
    for simulated, badge, code in (("rejected", "refused", "approval_rejected"), ("approved", "allowed", "approved")):
        page.fill("#tool", "echo.ping")
        page.fill("#arguments", '{"message": "what if"}')
        page.select_option("#mock-approval", simulated)
        page.locator("#result-badge").evaluate("el => el.replaceChildren()")
        page.click("#run")
        expect(page.locator("#result-badge")).to_contain_text(badge)
        expect(page.locator("#trace-table tr", has_text="approval")).to_contain_text(code)
    status, body, _ = rest(gateway, "GET", "/v1/approvals", key=gateway.admin_key)
    assert status == 200 and body["approvals"] == []  # the sandbox held nothing
    expected_errors(tab)


def test_an_approver_approves_a_waiting_call_in_the_inbox(browser: Any, gateway: GatewayProcess,
                                                         shots: Path) -> None:
    status, body, _ = rest(gateway, "PUT", "/v1/firearms/approvals/utility", {}, key=gateway.admin_key)
    assert status == 200, body
    status, body, _ = rest(gateway, "POST", "/v1/firearms/grants",
                           {"tenant": TENANT, "user": "boss", "firearm": "firearm.approve"}, key=gateway.admin_key)
    assert status == 201, body
    alice, boss = mint_key(gateway, TENANT, "alice"), mint_key(gateway, TENANT, "boss")
    out: list[Any] = []
    thread = waiting_call(gateway, alice, "ship it", out)

    def held() -> bool:  # the call reached the gate chain and is held (the inbox shows what is there)
        status, body, _ = rest(gateway, "GET", "/v1/approvals?state=pending", key=alice)
        return status == 200 and any(a["arguments"].get("message") == "ship it" for a in body["approvals"])

    try:
        assert wait_until(held, CALL_WAIT_S)
        tab = open_tab(browser, gateway)
        tab.sign_in(alice)  # the caller sees its own held call; deciding it is refused by the server
        tab.goto("/console/approvals")
        row = tab.page.locator("#approval-table tbody tr", has_text="ship it")
        expect(row).to_contain_text(f"{TENANT}/alice")
        row.locator("button.approve").click()
        expect(tab.page.locator("#status")).to_contain_text("cannot decide its own call")
        expected_errors(tab, "status of 403")

        tab = open_tab(browser, gateway)
        tab.sign_in(boss)
        tab.goto("/console/approvals")
        row = tab.page.locator("#approval-table tbody tr", has_text="ship it")
        expect(row).to_contain_text(f"{TENANT}/alice")
        expect(row).to_contain_text("echo.ping")
        expect(row.locator("pre.arguments")).to_contain_text('"message": "ship it"')
        tab.shot("approvals", shots)
        tab.page.fill("#reason", "looks fine")
        row.locator("button.approve").click()
        expect(tab.page.locator("#status")).to_contain_text("approved")
        expected_errors(tab)
    finally:
        thread.join(CALL_WAIT_S)
    [result] = out
    assert not result.is_error and result.structured_content["message"] == "ship it"
    status, body, _ = rest(gateway, "GET", "/v1/approvals?state=consumed", key=boss)
    assert [a["reason"] for a in body["approvals"]] == ["looks fine"]
