"""RequestContextBuilder: defaults, validation, stdio identity."""

from __future__ import annotations

import pytest

from northstar.common.errors import InvalidHeader
from northstar.common.identity import Mode, RequestContextBuilder, Transport

B = RequestContextBuilder()


def test_defaults_when_headers_are_missing() -> None:
    ctx = B.from_headers([])
    assert (ctx.tenant, ctx.user, ctx.mode, ctx.transport) == ("default", "anonymous", Mode.SAAS, Transport.HTTP)
    assert len(ctx.request_id) == 32 and ctx.request_id != B.from_headers([]).request_id


def test_headers_are_read_case_insensitively() -> None:
    ctx = B.from_headers([("X-Tenant-Id", "acme"), ("x-user-id", "ann"), ("X-MODE", "Lab"), ("X-Request-Id", "r-1")])
    assert (ctx.tenant, ctx.user, ctx.mode, ctx.request_id) == ("acme", "ann", Mode.LAB, "r-1")


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Mode", "invalid"), ("X-Tenant-Id", "a b"), ("X-Tenant-Id", "x" * 129), ("X-User-Id", "a\r\nb"),
     ("X-User-Id", ""), ("X-Request-Id", "é")],
)
def test_present_but_invalid_values_name_the_header(name: str, value: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        B.from_headers([(name, value)])
    assert info.value.details["header"] == name.lower()
    assert info.value.http_status == 400


def test_duplicates_are_refused() -> None:
    with pytest.raises(InvalidHeader, match="more than once"):
        B.from_headers([("X-User-Id", "a"), ("x-user-id", "a")])


def test_stdio_identity_from_flags_then_environment() -> None:
    env = {"NORTHSTAR_TENANT": "envt", "NORTHSTAR_USER": "envu", "NORTHSTAR_MODE": "enterprise"}
    ctx = B.from_stdio(env=env)
    assert (ctx.tenant, ctx.user, ctx.mode, ctx.transport) == ("envt", "envu", Mode.ENTERPRISE, Transport.STDIO)
    assert B.from_stdio(tenant="flag", env=env).tenant == "flag"
    with pytest.raises(InvalidHeader):
        B.from_stdio(user="bad user", env={})


def test_sandbox_context_keeps_the_principal() -> None:
    ctx = B.from_headers([("X-Tenant-Id", "t"), ("X-User-Id", "u")])
    sb = ctx.as_sandbox()
    assert (sb.tenant, sb.user, sb.sandbox, sb.transport) == ("t", "u", True, Transport.SANDBOX)
