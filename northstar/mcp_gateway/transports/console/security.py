"""The console's response headers, cookie and same-origin checks (pure; no Quart).

Every console response carries a Content-Security-Policy with no inline script, no eval and
no framing, plus the headers that keep a page out of frames, caches and referrers. The
session cookie is ``HttpOnly`` (never readable by script), ``SameSite=Strict`` (never sent
on a cross-site request) and ``Secure`` when the request came over HTTPS.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from northstar.policy.console_sessions import COOKIE_NAME

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "manifest-src 'self'",
    "frame-ancestors 'none'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" on a form POST,
    # and sign-in / sign-out check that Origin (the front door refuses "null" outright).
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

PAGE_CACHE = "no-store"  # pages carry the CSRF token and the caller's name


def session_cookie(session_id: str, *, secure: bool) -> str:
    """The ``Set-Cookie`` value that signs a browser in (a session cookie: the server ends it)."""
    return f"{COOKIE_NAME}={session_id}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def cleared_cookie(*, secure: bool) -> str:
    """The ``Set-Cookie`` value that removes the session cookie (sign-out, ended session)."""
    return (f"{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; "
            "Expires=Thu, 01 Jan 1970 00:00:00 GMT" + ("; Secure" if secure else ""))


def same_origin(origin: str | None, scheme: str, host: str | None) -> bool:
    """Whether a request's ``Origin`` is this very site (sign-in and sign-out require it).

    A missing Origin is refused: every browser sends one on a POST, and a client without a
    browser has no use for the console's cookie (it sends ``Authorization: Bearer``).
    """
    if not origin or not host or origin == "null":
        return False
    parts = urlsplit(origin.lower())
    return parts.scheme == scheme.lower() and parts.netloc == host.lower() and not parts.path
