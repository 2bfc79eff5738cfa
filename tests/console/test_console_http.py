"""The console over plain HTTP: headers on every page, no inline script in any page served, the
cookie's attributes, sign-in and sign-out checks, CSRF on the REST API, and where the key never
appears. No browser: what an attacker's own client could send."""

from __future__ import annotations

import http.client
import re
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

import pytest

from tests.console.kit import mint_key, rest
from tests.harness import GatewayProcess

PAGES = ["/console/", "/console/drafts", "/console/drafts/notes", "/console/sandbox", "/console/publish",
         "/console/policy", "/console/keys", "/console/audit", "/console/audit/verify", "/console/kpis"]
ADMIN_PAGES = {"/console/publish", "/console/policy", "/console/keys", "/console/audit/verify"}


def call(gw: GatewayProcess, method: str, path: str, *, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], str]:
    """One request, no redirect followed: (status, headers by lower-case name, body)."""
    parts = urlsplit(gw.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        got: dict[str, list[str]] = {}
        for k, v in resp.getheaders():
            got.setdefault(k.lower(), []).append(v)
        return resp.status, got, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def sign_in(gw: GatewayProcess, key: str) -> tuple[str, str]:
    """(the session cookie's value, the page's CSRF token) after a sign-in from the console's origin."""
    status, headers, _ = call(gw, "POST", "/console/login", body=urlencode({"key": key}).encode(),
                              headers={"Origin": gw.url, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["location"] == ["/console/"], (status, headers)
    session = headers["set-cookie"][0].split(";", 1)[0].split("=", 1)[1]
    _, _, page = call(gw, "GET", "/console/", headers={"Cookie": f"northstar_console={session}"})
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert token is not None, page
    return session, token.group(1)


def cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"northstar_console={session}"}


class Inline(HTMLParser):
    """Everything in a page that would run or style without a file of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k.lower(): (v or "") for k, v in attrs}
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.found.append("<script> without src")
            if names.get("type", "module") not in ("module", "text/javascript"):
                self.found.append(f"<script type={names.get('type')}>")
        if tag == "style":
            self.found.append("<style>")
        for name, value in names.items():
            if name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if name == "style":
                self.found.append(f"{tag} style=")
            if value.strip().lower().startswith("javascript:"):
                self.found.append(f"{tag} {name}=javascript:")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("script body")


def assert_hardened(headers: dict[str, list[str]], path: str) -> None:
    csp = headers["content-security-policy"][0]
    for part in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'",
                 "base-uri 'none'", "form-action 'self'"):
        assert part in csp, (path, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    assert headers["x-frame-options"] == ["DENY"], path
    assert headers["x-content-type-options"] == ["nosniff"], path


@pytest.fixture(scope="module")
def admin(gateway: GatewayProcess) -> tuple[str, str]:
    return sign_in(gateway, gateway.admin_key)


def test_every_page_is_hardened_and_carries_no_inline_script(gateway: GatewayProcess,
                                                             admin: tuple[str, str]) -> None:
    user, _ = sign_in(gateway, mint_key(gateway, "default", "erin"))
    seen = 0
    for who in (admin[0], user, None):
        for path in [*PAGES, "/console/login", "/console/nowhere", "/console/drafts/NOT~valid"]:
            status, headers, page = call(gateway, "GET", path, headers=cookie(who) if who else {})
            assert_hardened(headers, path)
            assert headers["cache-control"] == ["no-store"], path
            if status == 303:
                continue
            seen += 1
            parser = Inline()
            parser.feed(page)
            assert not parser.found, (path, parser.found)
    assert seen >= 2 * len(PAGES)
    for asset in ("/console/static/console.css", "/console/static/js/api.js", "/console/static/js/pages/editor.js"):
        status, headers, _ = call(gateway, "GET", asset)
        assert status == 200, asset
        assert_hardened(headers, asset)
    assert call(gateway, "GET", "/console/static/../app.py")[0] == 404
    assert call(gateway, "GET", "/console/static/%2e%2e/app.py")[0] == 404


def test_pages_need_a_session_and_admin_pages_an_admin(gateway: GatewayProcess, admin: tuple[str, str]) -> None:
    for path in PAGES:
        status, headers, _ = call(gateway, "GET", path)
        assert status == 303 and headers["location"] == ["/console/login"], path
        assert call(gateway, "GET", path, headers=cookie(admin[0]))[0] == 200, path
    user, _ = sign_in(gateway, mint_key(gateway, "default", "frank"))
    for path in PAGES:
        status, _, page = call(gateway, "GET", path, headers=cookie(user))
        assert status == (403 if path in ADMIN_PAGES else 200), path
        assert ("needs an admin key" in page) == (path in ADMIN_PAGES), path
    # A made-up session is no session: sent back to sign in, the cookie cleared.
    status, headers, _ = call(gateway, "GET", "/console/", headers=cookie("x" * 43))
    assert status == 303 and "Max-Age=0" in headers["set-cookie"][0]


def test_the_cookie_is_httponly_strict_and_a_session_cookie(gateway: GatewayProcess) -> None:
    status, headers, _ = call(gateway, "POST", "/console/login", body=urlencode({"key": gateway.admin_key}).encode(),
                              headers={"Origin": gateway.url, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303
    (set_cookie,) = headers["set-cookie"]
    attrs = [a.strip() for a in set_cookie.split(";")]
    name, value = attrs[0].split("=", 1)
    assert name == "northstar_console" and len(value) >= 43  # 256 random bits
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(attrs), attrs
    assert not any(a.lower().startswith(("max-age", "expires", "domain")) for a in attrs), attrs
    assert "Secure" not in attrs  # plain HTTP on loopback; added when the request came over HTTPS
    assert gateway.admin_key.split("_", 2)[2] not in set_cookie


def test_sign_in_and_sign_out_come_only_from_the_console_itself(gateway: GatewayProcess) -> None:
    form = urlencode({"key": gateway.admin_key}).encode()
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = call(gateway, "POST", "/console/login", body=form, headers=ctype)  # no Origin
    assert status == 403 and "set-cookie" not in headers
    status, headers, _ = call(gateway, "POST", "/console/login", body=form,
                              headers={**ctype, "Origin": "http://evil.example"})
    assert status == 403 and "set-cookie" not in headers  # the front door's Origin check
    port = urlsplit(gateway.url).port
    status, headers, _ = call(gateway, "POST", "/console/login", body=form,
                              headers={**ctype, "Origin": f"http://localhost:{port}"})  # allowed, not this origin
    assert status == 403 and "set-cookie" not in headers
    session, token = sign_in(gateway, gateway.admin_key)
    status, _, _ = call(gateway, "POST", "/console/logout", body=urlencode({"csrf": "nope"}).encode(),
                        headers={**ctype, **cookie(session), "Origin": gateway.url})
    assert status == 403  # a forged sign-out form does not end the session
    assert rest(gateway, "GET", "/v1/tools", headers=cookie(session))[0] == 200
    status, headers, _ = call(gateway, "POST", "/console/logout", body=urlencode({"csrf": token}).encode(),
                              headers={**ctype, **cookie(session), "Origin": gateway.url})
    assert status == 303 and "Max-Age=0" in headers["set-cookie"][0]
    assert rest(gateway, "GET", "/v1/tools", headers=cookie(session))[0] == 401


def test_state_changes_with_the_cookie_need_the_csrf_token(gateway: GatewayProcess, admin: tuple[str, str]) -> None:
    session, token = admin
    body = {"firearm": "firearm.csrf.http"}
    status, err, _ = rest(gateway, "PUT", "/v1/firearms/bindings/csrf.http", body, headers=cookie(session))
    assert status == 403 and err["error"]["code"] == "csrf_failed", err
    _, other_token = sign_in(gateway, gateway.admin_key)  # another session's token is not this one's
    status, err, _ = rest(gateway, "PUT", "/v1/firearms/bindings/csrf.http", body,
                          headers={**cookie(session), "X-CSRF-Token": other_token})
    assert status == 403 and err["error"]["code"] == "csrf_failed", err
    scopes = [b["scope"] for b in rest(gateway, "GET", "/v1/firearms/bindings", headers=cookie(session))[1]["bindings"]]
    assert "csrf.http" not in scopes
    status, out, _ = rest(gateway, "PUT", "/v1/firearms/bindings/csrf.http", body,
                          headers={**cookie(session), "X-CSRF-Token": token})
    assert status == 200 and out["firearm"] == "firearm.csrf.http", out
    # Authorization: Bearer alone decides when it is sent: no token needed, a cookie beside it ignored.
    status, out, _ = rest(gateway, "DELETE", "/v1/firearms/bindings/csrf.http", key=gateway.admin_key,
                          headers=cookie("not-a-session"))
    assert status == 200, out


def test_the_cookie_acts_as_its_key_through_the_same_permission_checks(gateway: GatewayProcess) -> None:
    user_key = mint_key(gateway, "default", "gina")
    session, token = sign_in(gateway, user_key)
    status, err, _ = rest(gateway, "POST", "/v1/keys", {"tenant": "default", "user": "x", "admin": True},
                          headers={**cookie(session), "X-CSRF-Token": token})
    assert status == 403 and err["error"]["code"] == "admin_required", err
    status, err, _ = rest(gateway, "GET", "/v1/keys", headers=cookie(session))
    assert status == 403 and err["error"]["code"] == "admin_required", err
    status, err, _ = rest(gateway, "GET", "/v1/tools", headers={**cookie(session), "X-User-Id": "someone-else"})
    assert status == 403 and err["error"]["code"] == "identity_mismatch", err
    entries = rest(gateway, "GET", "/v1/audit?user=admin", headers=cookie(session))[1]["entries"]
    assert all(e["user"] == "gina" for e in entries)  # its own records only, whatever it asks for


def test_the_key_list_never_carries_a_secret(gateway: GatewayProcess, admin: tuple[str, str]) -> None:
    key = mint_key(gateway, "default", "hugo")
    status, body, _ = rest(gateway, "GET", "/v1/keys", headers=cookie(admin[0]))
    assert status == 200
    ids = {k["key_id"] for k in body["keys"]}
    assert key.split("_")[1] in ids
    text = str(body)
    assert key.split("_", 2)[2] not in text and "digest" not in text and "nsk_" not in text


def test_the_key_never_reaches_a_log_line_or_a_page(gateway: GatewayProcess) -> None:
    secret = gateway.admin_key.split("_", 2)[2]
    session, _ = sign_in(gateway, gateway.admin_key)
    call(gateway, "POST", "/console/login", body=urlencode({"key": gateway.admin_key + "x"}).encode(),
         headers={"Origin": gateway.url, "Content-Type": "application/x-www-form-urlencoded"})
    for path in PAGES:
        assert secret not in call(gateway, "GET", path, headers=cookie(session))[2], path
    assert secret not in gateway.stderr_text()
    assert session not in gateway.stderr_text()
