"""The bootstrap admin key on a real store (SQLite and PostgreSQL): one per store however many
processes start at once, private on disk, and the start-up warnings about header trust."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from northstar.common.config import Settings
from northstar.common.identity import Transport
from northstar.policy.auth import Authenticator, KeyService
from northstar.policy.bootstrap import ensure_admin_key, header_warnings
from northstar.storage import kinds, open_store
from tests.pg import backend_url, require_backend


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
async def store_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    async with backend_url(backend, tmp_path) as (url, _schema):
        yield url


async def test_the_first_start_mints_one_private_admin_key(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "data" / "admin.key"
    async with open_store(store_url) as storage:
        keys = KeyService(storage.store)
        boot = await ensure_admin_key(keys, path, audit=storage.audit)
        assert boot.created and boot.on_disk and boot.message() == f"admin key: {path}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = path.read_text().strip()
        key = await keys.verify(secret)
        assert (key.key_id, key.admin, key.provenance, key.confirmed) == (boot.key_id, True, "bootstrap", True)
        ctx = await Authenticator(keys, trust_headers=False).authenticate(
            [("authorization", f"Bearer {secret}")], Transport.HTTP)
        assert ctx.is_admin and ctx.principal == "default/admin"
        [record] = [e.record for e in await storage.audit.query(tenant=None) if e.record.get("action") == "key_create"]
        assert (record["key_id"], record["provenance"]) == (key.key_id, "bootstrap") and secret not in str(record)
        again = await ensure_admin_key(keys, path)  # a later start: nothing new, the file stays
        assert (again.created, again.key_id, again.on_disk) == (False, key.key_id, True)
        assert path.read_text().strip() == secret
        path.unlink()
        gone = await ensure_admin_key(keys, path)
        assert not gone.created and not path.exists() and "keys create --admin" in gone.message()
        assert len(await keys.all()) == 1


async def test_processes_starting_together_make_exactly_one_bootstrap_key(store_url: str, tmp_path: Path) -> None:
    """Eight starts at once, each with its own connection to the store and its own directory
    (replicas on several hosts): one wins the compare-and-set; the others keep no key and no file."""
    outcomes = []
    async with open_store(store_url) as first:

        async def start(i: int) -> None:
            async with open_store(store_url) as mine:
                outcomes.append(await ensure_admin_key(KeyService(mine.store), tmp_path / f"host{i}" / "admin.key"))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(start, i)
        winners = [o for o in outcomes if o.created]
        assert len(winners) == 1 and len({o.key_id for o in outcomes}) == 1
        files = await trio.to_thread.run_sync(lambda: sorted(tmp_path.glob("host*/admin.key")))
        assert files == [winners[0].path]
        leftovers = await trio.to_thread.run_sync(lambda: list(tmp_path.glob("host*/.admin.key.*")))
        assert leftovers == []  # no temporary left behind
        live = await KeyService(first.store).all()
        assert [k.key_id for k in live] == [winners[0].key_id]  # the losers revoked their own
        marker = await first.store.get("_global", kinds.BOOTSTRAP, "admin_key")
        assert marker is not None and marker.version == 1


def test_header_trust_is_announced_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NORTHSTAR_ADMIN_USERS", raising=False)
    assert header_warnings(Settings(auth_mode="api_key")) == []
    [line] = header_warnings(Settings(auth_mode="headers"))
    assert "trusted as sent" in line and "never make an admin" in line
    [line] = header_warnings(Settings(auth_mode="auto"))
    assert "old name of api_key" in line
    monkeypatch.setenv("NORTHSTAR_ADMIN_USERS", "admin,root")
    assert any("no longer read" in w for w in header_warnings(Settings()))


def test_the_default_is_api_key_whatever_the_bind() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        settings = Settings(host=host)
        assert settings.auth_mode == "api_key" and not settings.trust_identity_headers
    assert Settings(auth_mode="auto").trust_identity_headers is False
    assert Settings(auth_mode="headers").trust_identity_headers is True
