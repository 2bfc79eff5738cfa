"""Console sign-in sessions: an opaque, server-side session bound to one API key.

The web console signs a browser in with an API key once; from then on the browser holds
only an opaque session id in an ``HttpOnly``, ``SameSite=Strict`` cookie. Why a session and
not the key itself in the cookie:

* the key is a long-lived credential that works on every door (MCP, REST, the CLI's
  twins); a session works only for the REST API and the console, expires on its own
  (idle and absolute limits below) and dies at once on sign-out, server-side, so a copy of
  the cookie taken before sign-out is worthless after it;
* the key never lands in the browser's cookie jar (on disk), only its session id does;
* the session carries the CSRF token it is bound to.

The session keeps the key's id and digest, never the key: every request through a session
looks the key up again (:meth:`~northstar.policy.auth.Authenticator.authenticate_session`),
so a revoked key stops working at once, whatever sessions it opened.

Sessions live in this process's memory (like the MCP transports' sessions): a restart signs
everyone out, and replicas behind one address need sticky routing for the console. The
table is bounded: at most :data:`MAX_SESSIONS_PER_KEY` per key and :data:`MAX_SESSIONS` in
all, the least recently used going first. Pure and clock-free: callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

#: The cookie that carries the session id (``HttpOnly; SameSite=Strict; Path=/``, ``Secure`` over HTTPS).
COOKIE_NAME = "northstar_console"
#: The header that carries the session's CSRF token on every state change made with the cookie.
CSRF_HEADER = "x-csrf-token"
#: Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

IDLE_TIMEOUT_S = 3600.0  # an hour without a request ends the session
ABSOLUTE_TIMEOUT_S = 12 * 3600.0  # a working day at most, however busy
MAX_SESSIONS = 10_000
MAX_SESSIONS_PER_KEY = 20
SESSION_ID_BYTES = 32  # 256 bits, URL-safe base64 in the cookie


def session_digest(session_id: str) -> str:
    """Sessions are indexed by a digest of their id: the table holds nothing a cookie can be made from."""
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


@dataclass(slots=True)
class ConsoleSession:
    key_id: str
    key_digest: str
    csrf_token: str
    created: float
    last_seen: float
    tenant: str
    user: str
    admin: bool

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token.encode(), token.encode("utf-8", "replace"))


@dataclass
class ConsoleSessions:
    """The live sessions, by digest of their id."""

    idle_timeout_s: float = IDLE_TIMEOUT_S
    absolute_timeout_s: float = ABSOLUTE_TIMEOUT_S
    max_sessions: int = MAX_SESSIONS
    max_per_key: int = MAX_SESSIONS_PER_KEY
    _by_digest: dict[str, ConsoleSession] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._by_digest)

    def open(self, *, key_id: str, key_digest: str, tenant: str, user: str, admin: bool,
             now: float) -> tuple[str, ConsoleSession]:
        """A new session for this key: (the id for the cookie, the session)."""
        same_key = sorted((s.last_seen, d) for d, s in self._by_digest.items() if s.key_id == key_id)
        for _, digest in same_key[: max(0, len(same_key) - self.max_per_key + 1)]:
            del self._by_digest[digest]
        while len(self._by_digest) >= self.max_sessions:
            oldest = min(self._by_digest, key=lambda d: self._by_digest[d].last_seen)
            del self._by_digest[oldest]
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        session = ConsoleSession(key_id, key_digest, secrets.token_urlsafe(32), now, now, tenant, user, admin)
        self._by_digest[session_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str, now: float) -> ConsoleSession | None:
        """The live session for this id (its idle clock restarted), or None: unknown or expired."""
        digest = session_digest(session_id)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        if now - session.last_seen > self.idle_timeout_s or now - session.created > self.absolute_timeout_s:
            del self._by_digest[digest]
            return None
        session.last_seen = now
        return session

    def close(self, session_id: str) -> bool:
        """Sign-out: the session ends now. Whether there was one."""
        return self._by_digest.pop(session_digest(session_id), None) is not None

    def close_key(self, key_id: str) -> int:
        """End every session of a key (it was revoked); how many."""
        doomed = [d for d, s in self._by_digest.items() if s.key_id == key_id]
        for digest in doomed:
            del self._by_digest[digest]
        return len(doomed)
