"""API keys and the authenticator, over a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from northstar.common import errors as E
from northstar.common.errors import IdentityMismatch, KeyNotConfirmed
from northstar.common.identity import Transport
from northstar.policy.auth import Authenticator, KeyService, bearer_token
from northstar.storage import Storage, kinds, open_store


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_store(f"sqlite:///{tmp_path / 'keys.db'}") as s:
        yield s


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


async def test_create_verify_revoke(storage: Storage) -> None:
    keys = KeyService(storage.store)
    secret, key = await keys.create("acme", "alice", admin=True, label="ci", provenance="cli")
    assert secret.startswith(f"nsk_{key.key_id}_")
    assert (await keys.verify(secret)).user == "alice"
    stored = await storage.store.get("_global", kinds.API_KEYS, key.key_id)
    assert stored is not None and secret.split("_", 2)[2] not in repr(stored.data)  # only the digest is kept
    assert [k["key_id"] for k in await keys.list()] == [key.key_id]
    assert "digest" not in (await keys.list())[0]
    await keys.revoke(key.key_id)
    with pytest.raises(E.Unauthorized):
        await keys.verify(secret)
    with pytest.raises(E.NotFound):
        await keys.revoke(key.key_id)


@pytest.mark.parametrize("token", ["", "nsk_", "nsk_0123456789abcdef_short", "Bearer x", "nsk_XYZ_" + "a" * 43])
async def test_malformed_keys_are_401(storage: Storage, token: str) -> None:
    with pytest.raises(E.Unauthorized):
        await KeyService(storage.store).verify(token)


async def test_a_right_id_with_a_wrong_secret_is_401(storage: Storage) -> None:
    keys = KeyService(storage.store)
    secret, key = await keys.create("acme", "alice")
    forged = f"nsk_{key.key_id}_{'A' * 43}"
    with pytest.raises(E.Unauthorized):
        await keys.verify(forged)
    assert (await keys.verify(secret)).key_id == key.key_id


async def test_a_revoke_by_another_process_is_seen_within_the_cache_ttl(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    gateway_keys = KeyService(storage.store, cache_ttl_s=1.0)
    secret, key = await gateway_keys.create("acme", "alice")
    assert await gateway_keys.verify(secret)
    await KeyService(storage.store).revoke(key.key_id)  # e.g. `northstar keys revoke` next to it
    await trio.sleep(1.01)
    with pytest.raises(E.Unauthorized):
        await gateway_keys.verify(secret)


async def test_the_lookup_cache_is_bounded(storage: Storage) -> None:
    keys = KeyService(storage.store, max_cached=3)
    for i in range(10):
        with pytest.raises(E.Unauthorized):
            await keys.verify(f"nsk_{i:016x}_{'a' * 43}")
    assert len(keys._cache) <= 3


async def test_authenticator_api_key_mode(storage: Storage) -> None:
    keys = KeyService(storage.store)
    auth = Authenticator(keys, trust_headers=False)
    secret, _ = await keys.create("acme", "alice", admin=True, provenance="cli")
    with pytest.raises(E.Unauthorized):
        await auth.authenticate([("x-user-id", "admin")], Transport.HTTP)
    ctx = await auth.authenticate(bearer(secret), Transport.SSE)
    assert (ctx.tenant, ctx.user, ctx.is_admin, ctx.authenticated_by, ctx.transport) == (
        "acme", "alice", True, "api_key", Transport.SSE)
    same = await auth.authenticate([*bearer(secret), ("x-tenant-id", "acme"), ("x-user-id", "alice")],
                                   Transport.HTTP)
    assert same.principal == "acme/alice"
    for header, value in (("x-tenant-id", "other"), ("x-user-id", "admin")):
        with pytest.raises(IdentityMismatch) as info:
            await auth.authenticate([*bearer(secret), (header, value)], Transport.HTTP)
        assert info.value.http_status == 403 and info.value.details == {"header": header}


async def test_authenticator_header_mode_never_makes_an_admin(storage: Storage) -> None:
    keys = KeyService(storage.store)
    auth = Authenticator(keys, trust_headers=True)
    for user in ("admin", "root", "alice"):
        ctx = await auth.authenticate([("x-tenant-id", "acme"), ("x-user-id", user)], Transport.HTTP)
        assert (ctx.principal, ctx.is_admin, ctx.authenticated_by) == (f"acme/{user}", False, "headers")
    with pytest.raises(E.Unauthorized):  # a key, if sent, is still checked
        await auth.authenticate(bearer("nsk_0123456789abcdef_" + "a" * 43), Transport.HTTP)
    secret, _ = await keys.create("ops", "root", admin=True, provenance="cli")
    ctx = await auth.authenticate(bearer(secret), Transport.HTTP)  # in headers mode an admin key still counts
    assert (ctx.principal, ctx.is_admin, ctx.authenticated_by) == ("ops/root", True, "api_key")


async def test_an_admin_key_cannot_be_minted_without_a_credential_behind_it(storage: Storage) -> None:
    keys = KeyService(storage.store)
    for provenance in (None, "headers", "stdio"):
        with pytest.raises(E.AdminRequired):
            await keys.create("acme", "alice", admin=True, provenance=provenance)
    _, key = await keys.create("acme", "alice", provenance="headers")  # a plain key: fine
    assert key.confirmed and not key.admin


async def legacy_admin_key(storage: Storage, provenance: str | None = None) -> tuple[str, str]:
    """An admin key as older versions stored it: no provenance (or minted by a header admin)."""
    keys = KeyService(storage.store)
    secret, key = await keys.create("default", "admin", provenance="cli")
    record = {**(await storage.store.get("_global", kinds.API_KEYS, key.key_id)).data,  # type: ignore[union-attr]
              "admin": True}
    for field in ("provenance", "minted_by", "adopted_by", "adopted_at"):
        record.pop(field)
    if provenance is not None:
        record["provenance"] = provenance
    await storage.store.save("_global", kinds.API_KEYS, key.key_id, record)
    return secret, key.key_id


@pytest.mark.parametrize("provenance", [None, "headers"])
async def test_a_legacy_admin_key_is_refused_until_adopted(storage: Storage, provenance: str | None) -> None:
    secret, key_id = await legacy_admin_key(storage, provenance)
    keys = KeyService(storage.store)
    auth = Authenticator(keys, trust_headers=False)
    with pytest.raises(KeyNotConfirmed) as info:
        await auth.authenticate(bearer(secret), Transport.HTTP)
    assert info.value.http_status == 403 and info.value.code == "key_not_confirmed"
    assert f"northstar keys adopt {key_id}" in info.value.message
    assert [k.key_id for k in await keys.unconfirmed()] == [key_id]
    listed = {k["key_id"]: k for k in await keys.list()}
    assert listed[key_id]["confirmed"] is False and listed[key_id]["provenance"] == provenance
    adopted = await keys.adopt(key_id, actor="cli/root")
    assert (adopted.provenance, adopted.adopted_by, adopted.confirmed) == ("adopted", "cli/root", True)
    ctx = await auth.authenticate(bearer(secret), Transport.HTTP)
    assert ctx.is_admin and ctx.principal == "default/admin"
    assert await keys.unconfirmed() == []
    with pytest.raises(E.NotFound):
        await keys.adopt("0123456789abcdef", actor="cli/root")


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([("authorization", "Basic abc")], E.Unauthorized),
        ([("authorization", "Bearer ")], E.Unauthorized),
        ([("authorization", "Bearer a"), ("Authorization", "Bearer b")], E.InvalidHeader),
    ],
)
def test_bearer_token_parsing(headers: list[tuple[str, str]], error: type[Exception]) -> None:
    with pytest.raises(error):
        bearer_token(headers)


def test_bearer_token_absent_and_present() -> None:
    assert bearer_token([("x-user-id", "a")]) is None
    assert bearer_token([("Authorization", "bearer  tok ")]) == "tok"
