"""Credentials: API keys, and whether identity headers are trusted.

Two modes (``NORTHSTAR_AUTH_MODE`` / ``northstar serve --auth-mode``):

* ``api_key`` (the default, whatever the bind address and whoever the peer): identity comes
  only from ``Authorization: Bearer <key>``. With OAuth configured (``northstar.policy.oauth``),
  a bearer token that is not an ``nsk_`` key is verified as a JWT access token instead.
  Keys are created with ``northstar keys create`` or ``POST /v1/keys``, shown once and stored
  as a SHA-256 digest (the keys are 256-bit random, so a plain digest is enough). Missing or
  bad keys get 401; identity headers that contradict the key are refused (403
  ``identity_mismatch``). A key is never passed on to a tool.
* ``headers`` (only when the operator asks for it; ``serve`` warns at start-up): requests
  without a credential are identified by ``X-Tenant-Id`` / ``X-User-Id`` as sent. A
  local-development convenience. A header never makes an admin: admin actions still need
  an admin key or an admin OAuth token, in every mode.

Admin keys carry their ``provenance``: how the request (or the command) that minted them was
authenticated (``bootstrap``, ``cli``, ``api_key``, ``oauth``; ``adopted`` once an operator
confirmed an older key). An admin key without one (minted before keys recorded it, when a
header could make an admin) or minted by a header-identified caller is refused (403
``key_not_confirmed``) until an operator runs ``northstar keys adopt KEY_ID`` or re-issues it.

Key format: ``nsk_<key_id>_<secret>``.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import trio

from northstar.common import errors as E
from northstar.common.errors import IdentityMismatch, KeyNotConfirmed
from northstar.common.identity import (
    MODE_HEADER,
    REQUEST_ID_HEADER,
    TENANT_HEADER,
    USER_HEADER,
    Mode,
    RequestContext,
    RequestContextBuilder,
    Transport,
    new_request_id,
    validate_value,
)
from northstar.policy.console_sessions import CSRF_HEADER, SAFE_METHODS, ConsoleSession, ConsoleSessions
from northstar.policy.firearms import GLOBAL_TENANT, iso_now
from northstar.policy.oauth import JwtVerifier
from northstar.storage import kinds

KEY_PATTERN = re.compile(r"^nsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


#: Provenances under which an admin key is honoured: minted by a credential, not by a header.
HONOURED_PROVENANCE = frozenset({"bootstrap", "cli", "api_key", "oauth", "adopted"})


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    tenant: str
    user: str
    admin: bool
    created_at: str
    digest: str
    label: str | None = None
    provenance: str | None = None  # how the minting request was authenticated (None: before this was kept)
    minted_by: str | None = None
    adopted_by: str | None = None
    adopted_at: str | None = None

    @property
    def confirmed(self) -> bool:
        """Whether the key may act as what it says: any non-admin key; an admin key minted by a credential."""
        return not self.admin or self.provenance in HONOURED_PROVENANCE

    def public(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "tenant": self.tenant, "user": self.user, "admin": self.admin,
                "created_at": self.created_at, "label": self.label, "provenance": self.provenance,
                "minted_by": self.minted_by, "confirmed": self.confirmed}


def unconfirmed_message(key_id: str) -> str:
    return (f"admin key {key_id} was minted before northstar recorded how keys were issued (when an identity "
            f"header could make an admin), so it is not honoured: an operator confirms it with "
            f"`northstar keys adopt {key_id}`, or issues a new one (`northstar keys create --admin`) "
            f"and revokes this one")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyService:
    """API keys in the versioned store, with a small time-bounded cache of lookups.

    Keys created or revoked through this service take effect at once; a key revoked by
    another process (``northstar keys revoke`` next to a running gateway, another replica)
    stops working within ``cache_ttl_s``. The cache is bounded, so a flood of made-up key
    ids cannot grow it without limit.
    """

    def __init__(self, store: Any, *, cache_ttl_s: float = 1.0, max_cached: int = 10_000) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self.max_cached = max_cached
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}
        self.on_revoke: builtins.list[Callable[[str], object]] = []  # e.g. end the key's console sessions

    def _remember(self, key_id: str, key: ApiKey | None) -> None:
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[key_id] = (key, trio.current_time() + self.cache_ttl_s)

    def _cached(self, key_id: str) -> ApiKey | EllipsisType | None:
        hit = self._cache.get(key_id)
        if hit is None or trio.current_time() >= hit[1]:
            return ...
        return hit[0]

    async def create(self, tenant: str, user: str, *, admin: bool = False, label: str | None = None,
                     actor: str | None = None, provenance: str | None = None) -> tuple[str, ApiKey]:
        """Mint a key; ``provenance`` says how the minting caller was authenticated.

        An admin key minted without a credential behind it (``headers``, or nothing) would not
        be honoured, so it is refused here rather than handed out.
        """
        validate_value(TENANT_HEADER, tenant)
        validate_value(USER_HEADER, user)
        if admin and provenance not in HONOURED_PROVENANCE:
            raise E.AdminRequired("an admin key can only be minted by an admin credential (a key or a token)")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(key_id, tenant, user, admin, iso_now(), digest(secret), label, provenance, actor)
        data = _asdict(key)
        await self.store.save(GLOBAL_TENANT, kinds.API_KEYS, key_id, data, expected_version=0, actor=actor)
        self._remember(key_id, key)
        return f"nsk_{key_id}_{secret}", key

    async def adopt(self, key_id: str, *, actor: str) -> ApiKey:
        """An operator confirms an admin key minted before provenance was kept (or by a header)."""
        rec = await self.store.get(GLOBAL_TENANT, kinds.API_KEYS, key_id)
        if rec is None or rec.data is None:
            raise E.NotFound("no such key", key_id=key_id)
        key = ApiKey(**rec.data)
        if key.confirmed:
            return key
        adopted = dataclasses.replace(key, provenance="adopted", adopted_by=actor, adopted_at=iso_now())
        await self.store.save(GLOBAL_TENANT, kinds.API_KEYS, key_id, _asdict(adopted),
                              expected_version=rec.version, actor=actor)
        self._remember(key_id, adopted)
        return adopted

    async def all(self) -> builtins.list[ApiKey]:
        """Every live key, paging through the store."""
        out: builtins.list[ApiKey] = []
        after: str | None = None
        while recs := await self.store.list(GLOBAL_TENANT, kinds.API_KEYS, after=after, limit=1000):
            out += [ApiKey(**r.data) for r in recs if r.data]
            after = recs[-1].resource_id
        return out

    async def revoke(self, key_id: str, *, actor: str | None = None) -> None:
        rec = await self.store.get(GLOBAL_TENANT, kinds.API_KEYS, key_id)
        if rec is None or rec.data is None:
            raise E.NotFound("no such key", key_id=key_id)
        await self.store.save(GLOBAL_TENANT, kinds.API_KEYS, key_id, None, actor=actor)
        self._remember(key_id, None)
        for hook in self.on_revoke:
            hook(key_id)

    async def list(self) -> list[dict[str, Any]]:
        return [key.public() for key in await self.all()]

    async def unconfirmed(self) -> builtins.list[ApiKey]:
        """Admin keys that are not honoured until an operator adopts or replaces them."""
        return [key for key in await self.all() if not key.confirmed]

    async def lookup(self, key_id: str) -> ApiKey | None:
        """The live key with this id (None: unknown or revoked), through the cache."""
        key = self._cached(key_id)
        if key is ...:
            rec = await self.store.get(GLOBAL_TENANT, kinds.API_KEYS, key_id)
            key = ApiKey(**rec.data) if rec is not None and rec.data else None
            self._remember(key_id, key)
        return key

    async def verify(self, token: str) -> ApiKey:
        m = KEY_PATTERN.fullmatch(token)
        if m is None:
            raise E.Unauthorized("malformed API key")
        key_id, secret = m.groups()
        return await self.verify_digest(key_id, digest(secret))

    async def verify_digest(self, key_id: str, key_digest: str) -> ApiKey:
        """The key whose id and secret digest these are (a console session holds both); 401 otherwise."""
        key = await self.lookup(key_id)
        if key is None or not hmac.compare_digest(key.digest, key_digest):
            raise E.Unauthorized("invalid or revoked API key")
        return key


def _asdict(key: ApiKey) -> dict[str, Any]:
    return {f: getattr(key, f) for f in key.__slots__}


class ConsoleSignIn:
    """Console sessions opened with an API key (:mod:`northstar.policy.console_sessions`).

    A mix-in of :class:`Authenticator`: the session is one more way to present an API key,
    checked by the same rules (a revoked key, an unconfirmed admin key, identity headers that
    contradict the key are refused as they are with ``Authorization: Bearer``).
    """

    keys: KeyService
    sessions: ConsoleSessions
    builder: RequestContextBuilder

    async def sign_in(self, token: str) -> tuple[str, ConsoleSession]:
        """Open a session for this API key (401 for a bad key, 403 for an unconfirmed admin key)."""
        key = await self.keys.verify(token.strip())
        if not key.confirmed:
            raise KeyNotConfirmed(unconfirmed_message(key.key_id), key_id=key.key_id)
        return self.sessions.open(key_id=key.key_id, key_digest=key.digest, tenant=key.tenant, user=key.user,
                                  admin=key.admin, now=trio.current_time())

    def sign_out(self, session_id: str) -> bool:
        return self.sessions.close(session_id)

    def session(self, session_id: str) -> ConsoleSession | None:
        return self.sessions.get(session_id, trio.current_time())

    async def authenticate_session(self, session_id: str, headers: Iterable[tuple[str, str]], transport: Transport,
                                   *, method: str) -> tuple[RequestContext, ConsoleSession]:
        """The caller behind a console session cookie; a state change must carry the session's CSRF token."""
        pairs = list(headers)
        ident = self.builder.identity_headers(pairs)
        session = self.session(session_id)
        if session is None:
            raise E.Unauthorized("the console session has ended: sign in again")
        if method.upper() not in SAFE_METHODS:
            sent = [v for k, v in pairs if k.lower() == CSRF_HEADER]
            if len(sent) != 1 or not session.csrf_ok(sent[0]):
                raise E.CsrfFailed(f"a state change made with the console's cookie needs its {CSRF_HEADER} header")
        try:
            key = await self.keys.verify_digest(session.key_id, session.key_digest)
        except E.Unauthorized:
            self.sessions.close_key(session.key_id)
            raise
        if not key.confirmed:
            raise KeyNotConfirmed(unconfirmed_message(key.key_id), key_id=key.key_id)
        for header, value in ((TENANT_HEADER, key.tenant), (USER_HEADER, key.user)):
            if header in ident and ident[header] != value:
                raise IdentityMismatch(f"{header} does not match the signed-in key", header=header)
        ctx = RequestContext(
            request_id=ident.get(REQUEST_ID_HEADER) or new_request_id(), tenant=key.tenant, user=key.user,
            mode=Mode(ident.get(MODE_HEADER, Mode.SAAS.value)), transport=transport, is_admin=key.admin,
            authenticated_by="api_key",
        )
        return ctx, session


class Authenticator(ConsoleSignIn):
    """Turns a request's headers into a RequestContext, per the configured mode.

    Identity headers stand in for a credential only with ``trust_headers`` (the ``headers``
    mode), and never make an admin: only an admin key or an admin OAuth token does.
    """

    def __init__(self, keys: KeyService, *, trust_headers: bool, oauth: JwtVerifier | None = None) -> None:
        self.keys = keys
        self.oauth = oauth
        self.trust_headers = trust_headers
        self.builder = RequestContextBuilder()
        self.sessions = ConsoleSessions()
        if isinstance(getattr(keys, "on_revoke", None), list):  # a revoked key ends its console sessions
            keys.on_revoke.append(self.sessions.close_key)

    async def authenticate(self, headers: Iterable[tuple[str, str]], transport: Transport) -> RequestContext:
        try:
            return await self._authenticate(list(headers), transport)
        except E.Unauthorized as err:
            if self.oauth is not None:  # point the client at the resource metadata (MCP authorization)
                err.www_authenticate = self.oauth.challenge
            raise

    async def _authenticate(self, pairs: list[tuple[str, str]], transport: Transport) -> RequestContext:
        ident = self.builder.identity_headers(pairs)
        token = bearer_token(pairs)
        request_id = ident.get(REQUEST_ID_HEADER) or new_request_id()
        if token is None:
            if not self.trust_headers:
                what = "<key or OAuth access token>" if self.oauth is not None else "<key>"
                raise E.Unauthorized(f"an API key is required: Authorization: Bearer {what}")
            ctx = self.builder.from_headers(pairs, transport=transport).replace(request_id=request_id)
            return ctx.replace(is_admin=False, authenticated_by="headers")
        if self.oauth is not None and not token.startswith("nsk_"):
            claims = await self.oauth.verify(token)
            for header, value in ((TENANT_HEADER, claims.tenant), (USER_HEADER, claims.user)):
                if header in ident and ident[header] != value:
                    raise IdentityMismatch(f"{header} does not match the access token", header=header)
            return RequestContext(
                request_id=request_id, tenant=claims.tenant, user=claims.user,
                mode=Mode(ident.get(MODE_HEADER, Mode.SAAS.value)), transport=transport,
                is_admin=claims.is_admin, authenticated_by="oauth",
            )
        key = await self.keys.verify(token)
        if not key.confirmed:
            raise KeyNotConfirmed(unconfirmed_message(key.key_id), key_id=key.key_id)
        for header, value in ((TENANT_HEADER, key.tenant), (USER_HEADER, key.user)):
            if header in ident and ident[header] != value:
                raise IdentityMismatch(f"{header} does not match the API key", header=header)
        return RequestContext(
            request_id=request_id, tenant=key.tenant, user=key.user,
            mode=Mode(ident.get(MODE_HEADER, Mode.SAAS.value)), transport=transport,
            is_admin=key.admin, authenticated_by="api_key",
        )


def bearer_token(headers: Iterable[tuple[str, str]]) -> str | None:
    values = [v for k, v in headers if k.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise E.InvalidHeader("authorization was sent more than once", header="authorization")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise E.Unauthorized("use Authorization: Bearer <key>")
    return token.strip()
