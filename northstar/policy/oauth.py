"""OAuth 2.1 bearer tokens: northstar as a resource server that accepts JWT access tokens.

On when ``oauth_issuer``, ``oauth_audience`` and ``oauth_jwks_url`` are all set. A token
is accepted when it is signed (RS256 or ES256 only; ``none`` and HMAC are refused) by a key
in the issuer's JWKS, its ``iss`` is the issuer, its ``aud`` names this resource, it is
within ``exp``/``nbf`` (with a small leeway), and it carries a tenant and a user claim that
obey the identity header rules. The admin scope (in ``scope`` or ``scp``) makes an admin.

The JWKS is cached for ``jwks_ttl_s``; a token with an unknown ``kid`` forces a refetch
(key rotation), at most once per ``min_refetch_interval_s`` so made-up ``kid`` values cannot
turn the gateway into a request amplifier. PyJWT and httpx2 are imported lazily: the stdio
cold start does not pay for them.

Protected Resource Metadata (RFC 9728) is served at ``/.well-known/oauth-protected-resource``
and 401 answers name it in ``WWW-Authenticate`` (the MCP authorization spec).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio

from northstar.common import errors as E
from northstar.common.identity import TENANT_HEADER, USER_HEADER, validate_value

log = logging.getLogger("northstar.oauth")

ALLOWED_ALGORITHMS = {"RS256": "RSA", "ES256": "EC"}  # algorithm -> the JWK key type it needs
METADATA_PATH = "/.well-known/oauth-protected-resource"
MAX_JWKS_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    tenant: str
    user: str
    is_admin: bool
    scopes: frozenset[str] = field(default_factory=frozenset)


class JwtVerifier:
    """Verifies JWT access tokens against an issuer's JWKS (fetched over HTTP, cached)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        *,
        tenant_claim: str = "tenant",
        user_claim: str = "sub",
        admin_scope: str = "northstar:admin",
        resource_url: str | None = None,
        authorization_servers: list[str] | None = None,
        leeway_s: float = 30.0,
        jwks_ttl_s: float = 300.0,
        min_refetch_interval_s: float = 30.0,
        fetch_timeout_s: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.tenant_claim = tenant_claim
        self.user_claim = user_claim
        self.admin_scope = admin_scope
        self.resource_url = resource_url or audience
        self.authorization_servers = list(authorization_servers or [issuer])
        self.leeway_s = leeway_s
        self.jwks_ttl_s = jwks_ttl_s
        self.min_refetch_interval_s = min_refetch_interval_s
        self.fetch_timeout_s = fetch_timeout_s
        self._keys: dict[str | None, Any] | None = None  # kid -> PyJWK
        self._expires_at = 0.0
        self._last_fetch = float("-inf")
        self._lock = trio.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> JwtVerifier | None:
        """The verifier the settings ask for, or None when OAuth is not configured."""
        if not (settings.oauth_issuer and settings.oauth_audience and settings.oauth_jwks_url):
            return None
        return cls(
            settings.oauth_issuer, settings.oauth_audience, settings.oauth_jwks_url,
            tenant_claim=settings.oauth_tenant_claim, user_claim=settings.oauth_user_claim,
            admin_scope=settings.oauth_admin_scope, resource_url=settings.oauth_resource_url,
            authorization_servers=settings.oauth_authorization_servers or None,
        )

    # -- metadata ---------------------------------------------------------------------------

    @property
    def metadata_url(self) -> str:
        parts = urlsplit(self.resource_url)
        return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}"

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401."""
        return f'Bearer realm="northstar", resource_metadata="{self.metadata_url}"'

    def metadata(self) -> dict[str, Any]:
        """The RFC 9728 Protected Resource Metadata document."""
        return {
            "resource": self.resource_url,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "scopes_supported": [self.admin_scope],
            "resource_name": "northstar",
        }

    # -- verification -----------------------------------------------------------------------

    async def verify(self, token: str) -> TokenIdentity:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise E.Unauthorized("malformed bearer token") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise E.Unauthorized("token signing algorithm is not accepted (RS256 or ES256 only)")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise E.Unauthorized("malformed bearer token")
        jwk = await self._key(kid)
        if jwk.key_type != ALLOWED_ALGORITHMS[alg] or jwk.algorithm_name not in (alg, None):
            raise E.Unauthorized("token signing key does not match its algorithm")
        try:
            claims = jwt.decode(
                token, jwk.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s, options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise E.Unauthorized("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise E.Unauthorized("token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise E.Unauthorized("token audience does not name this resource") from None
        except jwt.InvalidIssuerError:
            raise E.Unauthorized("token issuer is not accepted") from None
        except jwt.InvalidSignatureError:
            raise E.Unauthorized("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise E.Unauthorized(f"token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise E.Unauthorized("invalid bearer token") from None
        tenant = self._identity_claim(claims, self.tenant_claim, TENANT_HEADER)
        user = self._identity_claim(claims, self.user_claim, USER_HEADER)
        scopes = token_scopes(claims)
        return TokenIdentity(tenant=tenant, user=user, is_admin=self.admin_scope in scopes, scopes=scopes)

    @staticmethod
    def _identity_claim(claims: dict[str, Any], claim: str, header: str) -> str:
        value = claims.get(claim)
        if not isinstance(value, str) or not value:
            raise E.Unauthorized(f"token lacks the {claim} claim")
        try:
            return validate_value(header, value)
        except E.InvalidHeader:
            raise E.Unauthorized(f"token {claim} claim has characters that are not allowed") from None

    # -- the key set ------------------------------------------------------------------------

    async def _key(self, kid: str | None) -> Any:
        if self._keys is None or trio.current_time() >= self._expires_at:
            await self._refresh(forced=False)
        key = self._lookup(kid)
        if key is None and trio.current_time() - self._last_fetch >= self.min_refetch_interval_s:
            await self._refresh(forced=True)  # an unknown kid: the issuer may have rotated keys
            key = self._lookup(kid)
        if key is None:
            raise E.Unauthorized("token signing key is not known")
        return key

    def _lookup(self, kid: str | None) -> Any:
        keys = self._keys or {}
        if kid is None:  # tolerated only when the set holds exactly one key
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    async def _refresh(self, *, forced: bool) -> None:
        started = trio.current_time()
        async with self._lock:
            if self._last_fetch >= started:  # another task fetched while this one waited
                return
            if forced and started - self._last_fetch < self.min_refetch_interval_s:
                return
            self._last_fetch = trio.current_time()
            try:
                keys = parse_jwks(await self._fetch())
            except Exception as exc:
                log.warning("JWKS fetch failed", extra={"jwks_url": self.jwks_url, "error": repr(exc)})
                if self._keys is None:
                    raise E.ServiceUnavailable("the authorization server's signing keys are unavailable") from None
                # Keep the stale keys; try again after the refetch interval.
                self._expires_at = trio.current_time() + self.min_refetch_interval_s
                return
            self._keys = keys
            self._expires_at = trio.current_time() + self.jwks_ttl_s

    async def _fetch(self) -> dict[str, Any]:
        import httpx2

        with trio.fail_after(self.fetch_timeout_s):
            async with httpx2.AsyncClient(timeout=self.fetch_timeout_s, follow_redirects=False) as client:
                resp = await client.get(self.jwks_url, headers={"Accept": "application/json"})
        resp.raise_for_status()
        if len(resp.content) > MAX_JWKS_BYTES:
            raise ValueError("JWKS document is too large")
        data = resp.json()
        if not isinstance(data, dict):
            raise TypeError("JWKS document is not an object")
        return data


def parse_jwks(data: dict[str, Any]) -> dict[str | None, Any]:
    """The usable signing keys of a JWKS document, by ``kid`` (unusable keys are skipped)."""
    import jwt

    out: dict[str | None, Any] = {}
    entries = data.get("keys")
    if not isinstance(entries, list):
        raise TypeError("JWKS document has no keys list")
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ALLOWED_ALGORITHMS.values():
            continue
        if entry.get("alg") not in (None, *ALLOWED_ALGORITHMS):
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        out[entry.get("kid")] = key
    return out


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """The scopes of a token: ``scope`` (space-separated, RFC 8693/9068) or ``scp`` (string or list)."""
    scopes: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(v for v in value if isinstance(v, str))
    return frozenset(scopes)
