"""Who is calling, and through which door: the :class:`RequestContext`.

A ``RequestContext`` travels with every call from the transport adapter through the gate
chain to the tool actor. :class:`RequestContextBuilder` makes one from HTTP headers or
from the stdio command line / environment, validating every value:

=================  =========================  ===========================================
header             default when missing       rule when present
=================  =========================  ===========================================
``X-Tenant-Id``    ``default``                ``[A-Za-z0-9][A-Za-z0-9._@-]{0,127}``
``X-User-Id``      ``anonymous``              ``[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}``
``X-Mode``         ``saas``                   one of ``saas``, ``enterprise``, ``lab``
``X-Request-Id``   a fresh 128-bit hex id     ``[A-Za-z0-9._:-]{1,128}``
=================  =========================  ===========================================

A header that is present but invalid (unknown mode, bad characters, oversized, sent more
than once) raises :class:`~northstar.common.errors.InvalidHeader` naming the header.

``X-Mode`` is the deployment flavour the caller runs in: it is recorded as ``mode`` in every
audit record of the call and checked by the identity gate; it grants nothing. Whether
``X-Tenant-Id`` / ``X-User-Id`` are believed is not decided here but by the authenticator
(:mod:`northstar.policy.auth`): only in the explicit ``headers`` mode, and never as an admin.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from northstar.common.errors import InvalidHeader
from northstar.common.limits import TENANT_PATTERN, USER_PATTERN

TENANT_HEADER = "x-tenant-id"
USER_HEADER = "x-user-id"
MODE_HEADER = "x-mode"
REQUEST_ID_HEADER = "x-request-id"

DEFAULT_TENANT = "default"
DEFAULT_USER = "anonymous"
MAX_HEADER_VALUE = 128


class Mode(enum.StrEnum):
    SAAS = "saas"
    ENTERPRISE = "enterprise"
    LAB = "lab"


class Transport(enum.StrEnum):
    HTTP = "http"
    SSE = "sse"
    STREAMABLE_HTTP = "streamable_http"
    STDIO = "stdio"
    SANDBOX = "sandbox"
    INTERNAL = "internal"


_rng = random.Random()
_PATTERNS = {
    TENANT_HEADER: re.compile(TENANT_PATTERN),
    USER_HEADER: re.compile(USER_PATTERN),
    REQUEST_ID_HEADER: re.compile(r"[A-Za-z0-9._:-]{1,128}"),
}


def new_request_id() -> str:
    """A fresh 128-bit request id. Request ids label logs and audit records; they are not
    secrets (session ids are), so a fast PRNG is enough."""
    return f"{_rng.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The identity and origin of one call. Immutable; derive variants with :meth:`replace`."""

    request_id: str
    tenant: str = DEFAULT_TENANT
    user: str = DEFAULT_USER
    mode: Mode = Mode.SAAS
    transport: Transport = Transport.INTERNAL
    is_admin: bool = False
    sandbox: bool = False
    authenticated_by: str = "local"
    session_id: str | None = None

    @property
    def principal(self) -> str:
        return f"{self.tenant}/{self.user}"

    def replace(self, **changes: object) -> RequestContext:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def as_sandbox(self) -> RequestContext:
        """The same user and tenant, marked as a sandbox dry run."""
        return self.replace(sandbox=True, transport=Transport.SANDBOX, request_id=new_request_id())

    def to_dict(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "tenant": self.tenant,
            "user": self.user,
            "mode": self.mode.value,
            "transport": self.transport.value,
            "sandbox": self.sandbox,
        }


def validate_value(header: str, raw: str) -> str:
    """Check one identity value against its rule; raise InvalidHeader naming the header."""
    if len(raw) > MAX_HEADER_VALUE:
        raise InvalidHeader(f"{header} is longer than {MAX_HEADER_VALUE} characters", header=header)
    if header == MODE_HEADER:
        try:
            return Mode(raw.strip().lower()).value
        except ValueError:
            allowed = ", ".join(m.value for m in Mode)
            raise InvalidHeader(f"{header} must be one of: {allowed}", header=header) from None
    if not _PATTERNS[header].fullmatch(raw):
        raise InvalidHeader(f"{header} has characters that are not allowed", header=header)
    return raw


class RequestContextBuilder:
    """Builds :class:`RequestContext` objects from transport-level inputs."""

    IDENTITY_HEADERS = (TENANT_HEADER, USER_HEADER, MODE_HEADER, REQUEST_ID_HEADER)

    def __init__(self, *, default_tenant: str = DEFAULT_TENANT, default_user: str = DEFAULT_USER) -> None:
        self.default_tenant = default_tenant
        self.default_user = default_user

    def identity_headers(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Pick and validate the identity headers from raw (name, value) pairs."""
        found: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            if key not in self.IDENTITY_HEADERS:
                continue
            if key in found:
                raise InvalidHeader(f"{key} was sent more than once", header=key)
            found[key] = validate_value(key, value)
        return found

    def from_headers(
        self, headers: Iterable[tuple[str, str]], *, transport: Transport = Transport.HTTP
    ) -> RequestContext:
        values = self.identity_headers(headers)
        return RequestContext(
            request_id=values.get(REQUEST_ID_HEADER) or new_request_id(),
            tenant=values.get(TENANT_HEADER, self.default_tenant),
            user=values.get(USER_HEADER, self.default_user),
            mode=Mode(values.get(MODE_HEADER, Mode.SAAS.value)),
            transport=transport,
        )

    def from_stdio(
        self,
        *,
        tenant: str | None = None,
        user: str | None = None,
        mode: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RequestContext:
        """Identity for a stdio session: flags win over ``NORTHSTAR_TENANT``/``_USER``/``_MODE``."""
        env = os.environ if env is None else env
        pairs = [
            (TENANT_HEADER, tenant or env.get("NORTHSTAR_TENANT")),
            (USER_HEADER, user or env.get("NORTHSTAR_USER")),
            (MODE_HEADER, mode or env.get("NORTHSTAR_MODE")),
        ]
        ctx = self.from_headers([(k, v) for k, v in pairs if v], transport=Transport.STDIO)
        return ctx.replace(authenticated_by="stdio")
