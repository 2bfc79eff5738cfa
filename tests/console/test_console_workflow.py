"""The console in a real browser, as an admin: the catalogue, authoring a draft (an error beside
its field, the fix, a diff, a rollback), a sandbox run with its trace, publishing and rolling
back, binding and granting a firearm, the audit log and its verification, KPIs, API keys.

Each test drives Debian's chromium against a real ``northstar serve`` subprocess; every page
error, failed load and CSP violation the browser reports fails the test unless the test
provoked it. Screenshots of the main pages are taken on the way (see ``kit.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.console.kit import Tab, expected_errors, mint_key, open_tab, rest
from tests.harness import GatewayProcess

WRAPS = '[data-pointer="/scopes/0/operations/0/wraps"]'
OP_DESCRIPTION = '[data-pointer="/scopes/0/operations/0/description"]'


def admin_tab(browser: Any, gw: GatewayProcess) -> Tab:
    tab = open_tab(browser, gw)
    tab.sign_in(gw.admin_key)
    return tab


def a_draft(gw: GatewayProcess, draft_id: str, description: str, version: int = 0) -> dict[str, Any]:
    spec = {"schema_version": 1, "tool_id": draft_id, "title": draft_id.title(), "description": "A test tool.",
            "scopes": [{"name": f"{draft_id}.read", "description": "Read.", "firearm": None,
                        "operations": [{"name": "ping", "description": description, "wraps": "echo.ping",
                                        "input": {"presets": {}, "restrict": {}, "hide": []}}]}], "kpis": []}
    status, body, _ = rest(gw, "PUT", f"/v1/drafts/{draft_id}", {"expected_version": version, "spec": spec},
                           key=gw.admin_key)
    assert status in (200, 201), body
    return body  # type: ignore[no-any-return]


def test_sign_in_lands_on_the_catalogue(browser: Any, gateway: GatewayProcess, shots: Path) -> None:
    tab = admin_tab(browser, gateway)
    page = tab.page
    expect(page.locator("#tool-echo")).to_contain_text("built-in")
    media = page.locator("#tool-media_v2")
    expect(media).to_contain_text("firearm.media.write")
    expect(media).to_contain_text("media_v2__create_asset")
    expect(page.locator("#principal")).to_have_text("default/admin")
    # The upstream servers' section is shown, empty until one is registered.
    expect(page.locator("#upstreams")).to_be_visible()
    expect(page.locator("#upstream-list")).to_contain_text("No upstream is registered.")
    tab.shot("catalogue", shots)
    expected_errors(tab)


def test_a_draft_error_shows_beside_its_field_then_fix_diff_and_roll_back(
        browser: Any, gateway: GatewayProcess, shots: Path) -> None:
    tab = admin_tab(browser, gateway)
    page = tab.page
    tab.goto("/console/drafts")
    page.fill("#new-draft-id", "notes")
    page.click("#new-draft button[type=submit]")
    page.wait_for_url("**/console/drafts/notes")
    page.fill('[data-pointer="/title"]', "Notes")
    page.fill('[data-pointer="/description"]', "Plain-text notes.")
    page.fill('[data-pointer="/scopes/0/description"]', "Read notes.")
    page.fill(OP_DESCRIPTION, "Echo a note back.")
    page.fill(WRAPS, "echo.nope")
    page.click("#save")

    error = page.locator('[data-error-for="/scopes/0/operations/0/wraps"]')
    expect(error).to_contain_text("echo.nope is not an operation")
    expect(page.locator(WRAPS)).to_have_attribute("aria-invalid", "true")
    beside = page.locator(".field", has=page.locator(WRAPS)).locator(".field-error")
    expect(beside).to_be_visible()  # in the wraps field's own box, not in a list elsewhere
    expect(page.locator('[data-error-for="/title"]')).to_be_hidden()
    tab.shot("editor-error", shots)
    assert rest(gateway, "GET", "/v1/drafts/notes", key=gateway.admin_key)[0] == 404  # nothing was saved

    page.fill(WRAPS, "echo.ping")
    page.click("#save")
    expect(page.locator("#draft-version")).to_have_text("version 1")
    expect(error).to_be_hidden()
    page.fill(OP_DESCRIPTION, "Echo a note back, unchanged.")
    page.click("#save")
    expect(page.locator("#draft-version")).to_have_text("version 2")

    page.select_option("#diff-a", "1")
    page.select_option("#diff-b", "2")
    page.click("#show-diff")
    expect(page.locator("#diff .del")).to_have_text('-       "description": "Echo a note back.",\n')
    expect(page.locator("#diff .add")).to_have_text('+       "description": "Echo a note back, unchanged.",\n')
    tab.shot("editor-diff", shots)

    page.click('button.restore[data-version="1"]')
    expect(page.locator("#draft-version")).to_have_text("version 3")
    expect(page.locator(OP_DESCRIPTION)).to_have_value("Echo a note back.")
    versions = rest(gateway, "GET", "/v1/drafts/notes/versions", key=gateway.admin_key)[1]["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[2]["spec"] == versions[0]["spec"]
    expected_errors(tab, "/v1/drafts/notes")  # the new draft's first lookup: 404


def run_sandbox(tab: Tab, tool: str, arguments: str, grants: str = "") -> None:
    page = tab.page
    page.fill("#tool", tool)
    page.fill("#arguments", arguments)
    page.fill("#mock-grants", grants)
    page.locator("#result-badge").evaluate("el => el.replaceChildren()")
    page.click("#run")
    expect(page.locator("#result-badge .badge")).to_be_visible()


def test_a_sandbox_run_shows_the_trace_gate_by_gate(browser: Any, gateway: GatewayProcess, shots: Path) -> None:
    tab = admin_tab(browser, gateway)
    page = tab.page
    tab.goto("/console/sandbox")
    run_sandbox(tab, "echo.ping", '{"message": "hello from the sandbox"}')
    expect(page.locator("#result-badge")).to_contain_text("allowed")
    gates = page.locator("#trace-table tbody tr td:first-child").all_inner_texts()
    assert gates[:3] == ["identity", "resolve", "firearm"], gates
    expect(page.locator("#output")).to_contain_text("hello from the sandbox")

    write = '{"name": "memo.txt", "mime_type": "text/plain", "content_text": "hi"}'
    run_sandbox(tab, "media_v2.create_asset", write)
    expect(page.locator("#result-badge")).to_contain_text("refused")
    expect(page.locator("#trace-table tr", has_text="firearm")).to_contain_text("deny")
    expect(page.locator("#result-facts")).to_contain_text("firearm_required")

    run_sandbox(tab, "media_v2.create_asset", write, grants="firearm.media.write")  # what if I held it?
    expect(page.locator("#result-badge")).to_contain_text("allowed")
    expect(page.locator("#trace-table tr", has_text="firearm")).to_contain_text("allow")
    tab.shot("sandbox", shots)
    live = rest(gateway, "POST", "/v1/tools/media_v2.list_assets/call", {"arguments": {}}, key=gateway.admin_key)[1]
    assert "memo.txt" not in str(live["output"])  # the sandbox's write never reached the live store
    expected_errors(tab)


def test_publish_shows_both_artifacts_and_rolls_back(browser: Any, gateway: GatewayProcess, shots: Path) -> None:
    a_draft(gateway, "memo", "First.")
    tab = admin_tab(browser, gateway)
    page = tab.page
    tab.goto("/console/publish?draft=memo")
    expect(page.locator("#draft")).to_have_value("memo")
    page.click("#publish")
    expect(page.locator("#package")).to_contain_text("memo@1.0.0")
    expect(page.locator("#overlay")).to_contain_text("active")
    content_hash = rest(gateway, "GET", "/v1/registry/packages/memo/1.0.0", key=gateway.admin_key)[1]["content_hash"]
    expect(page.locator("#package")).to_contain_text(content_hash)

    a_draft(gateway, "memo", "Second.", version=1)
    page.click("#publish")
    expect(page.locator("#package")).to_contain_text("memo@1.0.1")
    expect(page.locator("#package-table")).to_contain_text("1.0.0")
    page.click('button.rollback[data-version="1.0.0"]')
    expect(page.locator("#status")).to_contain_text("memo now serves package 1.0.0")
    current = rest(gateway, "GET", "/v1/overlays/memo", key=gateway.admin_key)[1]["current"]
    assert current["package_version"] == "1.0.0"
    tab.shot("publish", shots)

    tab.goto("/console/")
    expect(page.locator("#tool-memo")).to_contain_text("published")
    expected_errors(tab)


def test_bind_a_firearm_and_grant_it_with_an_expiry(browser: Any, gateway: GatewayProcess, shots: Path) -> None:
    tab = admin_tab(browser, gateway)
    page = tab.page
    tab.goto("/console/policy")
    page.fill("#bind-scope", "reports.write")
    page.fill("#bind-firearm", "firearm.reports.write")
    page.click("#bind")
    expect(page.locator("#binding-table tr", has_text="reports.write")).to_contain_text("firearm.reports.write")
    page.fill("#grant-tenant", "default")
    page.fill("#grant-user", "alice")
    page.fill("#grant-firearm", "firearm.reports.write")
    page.fill("#grant-expires", "2031-01-02T03:04")
    page.fill("#grant-reason", "on call this week")
    page.click("#grant")
    row = page.locator("#grant-table tr", has_text="alice")
    expect(row).to_contain_text("firearm.reports.write")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("on call this week")
    tab.shot("policy", shots)
    grants = rest(gateway, "GET", "/v1/firearms/grants", key=gateway.admin_key)[1]["grants"]
    mine = [g for g in grants if g["user"] == "alice" and g["firearm"] == "firearm.reports.write"]
    assert len(mine) == 1 and mine[0]["expires_at"].startswith("2031-01-0"), mine
    bindings = rest(gateway, "GET", "/v1/firearms/bindings", key=gateway.admin_key)[1]["bindings"]
    assert {"scope": "reports.write", "firearm": "firearm.reports.write"} in [
        {"scope": b["scope"], "firearm": b["firearm"]} for b in bindings]
    expected_errors(tab)


def test_the_audit_log_filters_shows_a_record_and_verifies(browser: Any, gateway: GatewayProcess,
                                                            shots: Path) -> None:
    for n in range(3):
        rest(gateway, "POST", "/v1/tools/echo.ping/call", {"arguments": {"message": f"audit {n}"}},
             key=gateway.admin_key)
    tab = admin_tab(browser, gateway)
    page = tab.page
    tab.goto("/console/audit")
    page.fill("#f-tool", "echo")  # the audit's tool filter takes a tool id
    page.select_option("#f-decision", "allow")
    page.click("#apply")
    expect(page.locator("#status")).to_contain_text("records")
    # The unfiltered first page also said "records": wait (bounded) for the filtered table.
    cells = page.locator("#audit-table tbody tr td:nth-child(6)")
    expect(cells.filter(has_text="echo.ping").nth(2)).to_be_visible()
    expect(cells.filter(has_not_text="echo.ping")).to_have_count(0)
    tools = cells.all_inner_texts()
    assert len(tools) >= 3 and set(tools) == {"echo.ping"}, tools  # the column shows the operation
    page.locator("#audit-table tbody tr button.link").first.click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-json")).to_contain_text('"canonical_name": "echo.ping"')
    tab.shot("audit", shots)

    tab.goto("/console/audit/verify")
    expect(page.locator("#report-badge")).to_contain_text("intact")
    expect(page.locator("#report-facts")).to_contain_text("yes, the seal holds")
    tab.shot("verify", shots)
    expected_errors(tab)


def test_kpis_show_each_binding_with_a_chart_of_its_window(browser: Any, gateway: GatewayProcess,
                                                            shots: Path) -> None:
    body = {"metric": "latency_p95_ms", "target": 250, "window": "5m", "owner": "ops"}
    assert rest(gateway, "PUT", "/v1/kpi/bindings/echo/p95", body, key=gateway.admin_key)[0] == 200
    for n in range(5):
        rest(gateway, "POST", "/v1/tools/echo.ping/call", {"arguments": {"message": f"kpi {n}"}},
             key=gateway.admin_key)
    tab = admin_tab(browser, gateway)
    page = tab.page
    tab.goto("/console/kpis")
    card = page.locator('[data-kpi="echo/p95"]')
    expect(card).to_contain_text("ok")
    expect(card.locator("svg.spark rect.spark-bar")).not_to_have_count(0)
    expect(card.locator("svg.spark line.spark-target")).to_have_count(1)
    tab.shot("kpis", shots)
    expected_errors(tab)


def test_a_new_key_is_shown_once(browser: Any, gateway: GatewayProcess, shots: Path) -> None:
    tab = admin_tab(browser, gateway)
    page = tab.page
    tab.goto("/console/keys")
    page.fill("#key-tenant", "default")
    page.fill("#key-user", "bob")
    page.fill("#key-label", "laptop")
    page.click("#create-key")
    secret = page.locator("#new-key-secret")
    expect(secret).to_have_text(__import__("re").compile(r"^nsk_[0-9a-f]{16}_"))
    key = secret.inner_text()
    expect(page.locator("#key-table tr", has_text="laptop")).to_contain_text("default/bob")
    tab.shot("keys", shots)
    page.click("#new-key-done")
    expect(secret).to_have_text("")
    tab.goto("/console/keys")
    assert key not in page.content()  # shown once: the list never carries a secret
    assert rest(gateway, "GET", "/v1/tools", key=key)[0] == 200
    expected_errors(tab)


def test_a_non_admin_sees_the_catalogue_but_not_the_admin_links(browser: Any, gateway: GatewayProcess) -> None:
    tab = open_tab(browser, gateway)
    tab.sign_in(mint_key(gateway, "default", "dora"))
    nav = tab.page.locator("nav").inner_text()
    assert "Catalogue" in nav and "Audit" in nav
    assert not {"Policy", "API keys", "Publish", "Verify"} & set(nav.split()), nav
    expect(tab.page.locator("#tool-echo")).to_be_visible()
    expected_errors(tab)
