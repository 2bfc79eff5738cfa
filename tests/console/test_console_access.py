"""Who may do what in the console, in a real browser: the cookie's flags, sign-out, a revoked key,
a non-admin refused the admin pages by the server, and CSRF on a state change made from the page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.console.kit import expected_errors, mint_key, open_tab, rest
from tests.harness import GatewayProcess

ADMIN_PAGES = ["/console/publish", "/console/policy", "/console/keys", "/console/audit/verify"]
LOGIN = re.compile(r".*/console/login$")


def test_the_session_cookie_is_httponly_strict_and_holds_no_key(browser: Any, gateway: GatewayProcess) -> None:
    tab = open_tab(browser, gateway)
    tab.sign_in(gateway.admin_key)
    cookie = tab.session_cookie()
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["expires"] == -1  # a session cookie: the server decides when it ends
    assert gateway.admin_key not in cookie["value"] and gateway.admin_key.split("_", 2)[2] not in cookie["value"]
    assert "northstar_console" not in tab.page.evaluate("document.cookie")  # never readable by script
    assert gateway.admin_key not in tab.page.content()
    expected_errors(tab)


def test_sign_out_ends_the_session_on_the_server(browser: Any, gateway: GatewayProcess) -> None:
    tab = open_tab(browser, gateway)
    tab.sign_in(gateway.admin_key)
    cookie = tab.session_cookie()
    assert cookie is not None
    tab.page.click("#sign-out")
    tab.page.wait_for_url(LOGIN)
    assert tab.session_cookie() is None
    tab.goto("/console/")
    expect(tab.page).to_have_url(LOGIN)
    # A copy of the cookie taken before sign-out is worthless after it.
    status, body, _ = rest(gateway, "GET", "/v1/tools", headers={"Cookie": f"northstar_console={cookie['value']}"})
    assert status == 401 and body["error"]["code"] == "unauthorized", body
    expected_errors(tab)


def test_a_revoked_key_stops_working_at_once(browser: Any, gateway: GatewayProcess) -> None:
    key = mint_key(gateway, "default", "carol")
    key_id = key.split("_")[1]
    tab = open_tab(browser, gateway)
    tab.sign_in(key)
    tab.goto("/console/audit")
    expect(tab.page.locator("#status")).to_contain_text("records")
    assert rest(gateway, "DELETE", f"/v1/keys/{key_id}", key=gateway.admin_key)[0] == 200
    status = tab.page.evaluate("fetch('/v1/tools', {credentials: 'same-origin'}).then(r => r.status)")
    assert status == 401
    tab.goto("/console/audit")
    expect(tab.page).to_have_url(LOGIN)
    expected_errors(tab, "/v1/tools")


def test_a_non_admin_is_refused_the_admin_pages_by_the_server(browser: Any, gateway: GatewayProcess,
                                                              shots: Path) -> None:
    tab = open_tab(browser, gateway)
    tab.sign_in(mint_key(gateway, "default", "dave"))
    for path in ADMIN_PAGES:
        response = tab.goto(path)
        assert response.status == 403, path
        expect(tab.page.locator("#error-message")).to_contain_text("needs an admin key")
        assert 'type="module"' not in tab.page.content()  # the page itself was not served
    tab.shot("non-admin-refused", shots)
    for path in ("/console/", "/console/drafts", "/console/sandbox", "/console/audit", "/console/kpis"):
        assert tab.goto(path).status == 200, path
    expected_errors(tab, "status of 403")


def test_a_state_change_from_the_page_needs_the_csrf_token(browser: Any, gateway: GatewayProcess) -> None:
    tab = open_tab(browser, gateway)
    tab.sign_in(gateway.admin_key)
    put = """async (token) => {
        const headers = {'Content-Type': 'application/json'};
        if (token !== null) headers['X-CSRF-Token'] = token;
        const r = await fetch('/v1/firearms/bindings/csrf.probe', {method: 'PUT', credentials: 'same-origin',
                              headers, body: JSON.stringify({firearm: 'firearm.csrf.probe'})});
        return [r.status, await r.json()];
    }"""
    status, body = tab.page.evaluate(put, None)
    assert status == 403 and body["error"]["code"] == "csrf_failed", body
    status, body = tab.page.evaluate(put, "not-the-token")
    assert status == 403 and body["error"]["code"] == "csrf_failed", body
    bindings = rest(gateway, "GET", "/v1/firearms/bindings", key=gateway.admin_key)[1]["bindings"]
    assert "csrf.probe" not in [b["scope"] for b in bindings]  # refused before any effect
    token = tab.page.get_attribute('meta[name="csrf-token"]', "content")
    status, body = tab.page.evaluate(put, token)
    assert status == 200 and body["firearm"] == "firearm.csrf.probe", body
    expected_errors(tab, "status of 403")


def test_a_bad_key_is_refused_without_a_cookie(browser: Any, gateway: GatewayProcess) -> None:
    tab = open_tab(browser, gateway)
    tab.goto("/console/login")
    tab.page.fill("#key", "nsk_0123456789abcdef_" + "A" * 43)
    tab.page.click("#sign-in")
    expect(tab.page.locator("#login-error")).to_contain_text("not accepted")
    assert tab.session_cookie() is None
    assert "A" * 43 not in tab.page.content()  # the key is not echoed back
    expected_errors(tab, "status of 401")
