"""Shared pieces of the console's tests: a gateway in its default identity mode, Debian's
chromium driven by Playwright (never a downloaded browser), signing in, and screenshots.

Screenshots are always taken (to a temporary directory) so that code path runs in every
test run; with ``NORTHSTAR_CONSOLE_SCREENSHOTS=<dir>`` they are also written to ``<dir>``
(``make console-screenshots`` writes the ones ``docs/console.md`` shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import GatewayProcess, bearer

CHROMIUM = os.environ.get("NORTHSTAR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS_ENV = "NORTHSTAR_CONSOLE_SCREENSHOTS"
WAIT_MS = 20_000  # every wait for the page is bounded (a shared, busy machine: generous)


def rest(gw: GatewayProcess, method: str, path: str, body: Any = None, *, key: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    """One REST call with the standard library: (status, parsed JSON or text, headers)."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = {**(bearer(key) if key else {}), **(headers or {})}
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(gw.url + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw, got = resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as err:
        status, raw, got = err.code, err.read(), dict(err.headers.items())
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text), got
    except ValueError:
        return status, text, got


def mint_key(gw: GatewayProcess, tenant: str, user: str, *, admin: bool = False) -> str:
    status, body, _ = rest(gw, "POST", "/v1/keys", {"tenant": tenant, "user": user, "admin": admin},
                           key=gw.admin_key)
    assert status == 201, body
    return str(body["key"])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway in the product's default identity mode (API keys; a bootstrap admin key)."""
    with GatewayProcess(tmp_path_factory.mktemp("console"), auth_mode=None) as gw:
        yield gw


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module (Debian's, driven by Playwright)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (make test does it)")
    from playwright.sync_api import sync_playwright

    with plain_asyncio(), sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def plain_asyncio() -> Iterator[None]:
    """Playwright's sync API runs an asyncio loop of its own in this thread, marked as running
    between calls. Make it under asyncio's standard policy (the test process has trio_asyncio's
    installed) and leave no running loop behind: the trio tests that follow would see it."""
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        yield
    finally:
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop_policy(policy)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@dataclass
class Tab:
    """A browser context (its own cookie jar) and its page; page errors are collected, never ignored."""

    gw: GatewayProcess
    page: Any
    context: Any
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.gw.url + path, wait_until="load")

    def sign_in(self, key: str) -> None:
        self.goto("/console/login")
        self.page.fill("#key", key)
        self.page.click("#sign-in")
        self.page.wait_for_url(self.gw.url + "/console/", timeout=WAIT_MS)

    def session_cookie(self) -> dict[str, Any] | None:
        return next((c for c in self.context.cookies() if c["name"] == "northstar_console"), None)

    def shot(self, name: str, shots: Path) -> Path:
        self.page.wait_for_load_state("networkidle", timeout=WAIT_MS)
        path = shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        wanted = os.environ.get(SCREENSHOTS_ENV)
        if wanted:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(wanted) / path.name)
        return path


def open_tab(browser: Any, gw: GatewayProcess) -> Tab:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    tab = Tab(gw, page, context)
    page.on("pageerror", lambda exc: tab.errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: tab.errors.append(f"console.error: {msg.text} @ {msg.location.get('url')}")
            if msg.type == "error" else None)
    return tab


def expected_errors(tab: Tab, *allowed: str) -> None:
    """No script error, no CSP violation, no failed load but the ones a test provoked (``allowed`` substrings)."""
    left = [e for e in tab.errors if not any(a in e for a in allowed)]
    assert not left, left
    tab.errors.clear()
