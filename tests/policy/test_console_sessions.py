"""Console sessions: opaque ids, bounded tables, idle and absolute expiry, CSRF, and the
authenticator's session path (a revoked key ends its sessions at once)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from northstar.common import errors as E
from northstar.common.identity import Transport
from northstar.policy.auth import Authenticator, KeyService
from northstar.policy.console_sessions import ConsoleSessions, session_digest
from northstar.storage import Storage, open_store

KEY = {"key_id": "0123456789abcdef", "key_digest": "d" * 64, "tenant": "acme", "user": "alice", "admin": False}


def test_a_session_id_is_random_and_only_its_digest_is_kept() -> None:
    sessions = ConsoleSessions()
    a, _ = sessions.open(**KEY, now=0.0)
    b, _ = sessions.open(**KEY, now=0.0)
    assert a != b and len(a) >= 43  # 256 bits, URL-safe base64
    assert a not in repr(sessions._by_digest) and session_digest(a) in sessions._by_digest
    assert sessions.get(a, 1.0) is not None and sessions.get("made-up", 1.0) is None


def test_sessions_expire_when_idle_and_after_the_absolute_limit() -> None:
    sessions = ConsoleSessions(idle_timeout_s=10.0, absolute_timeout_s=25.0)
    sid, _ = sessions.open(**KEY, now=0.0)
    assert sessions.get(sid, 9.0) is not None  # each use restarts the idle clock
    assert sessions.get(sid, 18.0) is not None
    assert sessions.get(sid, 26.0) is None  # busy, but past the absolute limit
    idle, _ = sessions.open(**KEY, now=100.0)
    assert sessions.get(idle, 111.0) is None and len(sessions) == 0


def test_the_tables_are_bounded_per_key_and_in_all() -> None:
    sessions = ConsoleSessions(max_sessions=5, max_per_key=3)
    first = [sessions.open(**KEY, now=float(t))[0] for t in range(4)]
    assert sessions.get(first[0], 4.0) is None and all(sessions.get(s, 4.0) for s in first[1:])
    others = [sessions.open(**{**KEY, "key_id": f"{n:016x}"}, now=10.0 + n)[0] for n in range(3)]
    assert len(sessions) == 5 and sessions.get(others[-1], 20.0) is not None


def test_csrf_tokens_are_per_session_and_compared_whole() -> None:
    sessions = ConsoleSessions()
    _, one = sessions.open(**KEY, now=0.0)
    _, two = sessions.open(**KEY, now=0.0)
    assert one.csrf_token != two.csrf_token
    assert one.csrf_ok(one.csrf_token) and not one.csrf_ok(two.csrf_token)
    assert not one.csrf_ok(None) and not one.csrf_ok("") and not one.csrf_ok(one.csrf_token[:-1])
    assert not one.csrf_ok("é" * 10)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_store(f"sqlite:///{tmp_path / 'sessions.db'}") as s:
        yield s


async def test_a_session_acts_as_its_key_until_the_key_is_revoked(storage: Storage) -> None:
    keys = KeyService(storage.store)
    auth = Authenticator(keys, trust_headers=False)
    secret, key = await keys.create("acme", "alice")
    sid, session = await auth.sign_in(secret)
    ctx, _ = await auth.authenticate_session(sid, [], Transport.HTTP, method="GET")
    assert (ctx.tenant, ctx.user, ctx.is_admin, ctx.authenticated_by) == ("acme", "alice", False, "api_key")
    with pytest.raises(E.CsrfFailed):
        await auth.authenticate_session(sid, [], Transport.HTTP, method="POST")
    with pytest.raises(E.CsrfFailed):  # sent twice is refused too
        await auth.authenticate_session(sid, [("X-CSRF-Token", session.csrf_token)] * 2, Transport.HTTP,
                                        method="DELETE")
    await auth.authenticate_session(sid, [("X-CSRF-Token", session.csrf_token)], Transport.HTTP, method="PUT")
    with pytest.raises(E.IdentityMismatch):
        await auth.authenticate_session(sid, [("X-User-Id", "mallory")], Transport.HTTP, method="GET")
    await keys.revoke(key.key_id)
    assert len(auth.sessions) == 0  # revoking the key ended its sessions
    with pytest.raises(E.Unauthorized):
        await auth.authenticate_session(sid, [], Transport.HTTP, method="GET")


async def test_sign_in_refuses_bad_and_unconfirmed_keys(storage: Storage) -> None:
    keys = KeyService(storage.store)
    auth = Authenticator(keys, trust_headers=True)
    with pytest.raises(E.Unauthorized):
        await auth.sign_in("nsk_0123456789abcdef_" + "A" * 43)
    secret, key = await keys.create("acme", "root", admin=True, provenance="cli")
    stored = await storage.store.get("_global", "api_keys", key.key_id)
    assert stored is not None
    await storage.store.save("_global", "api_keys", key.key_id, {**stored.data, "provenance": None},
                             expected_version=stored.version)
    keys._cache.clear()
    with pytest.raises(E.KeyNotConfirmed):
        await auth.sign_in(secret)
    sid, _ = await auth.sign_in((await keys.create("acme", "bob"))[0])
    assert auth.sign_out(sid) and not auth.sign_out(sid)
    with pytest.raises(E.Unauthorized):
        await auth.authenticate_session(sid, [], Transport.HTTP, method="GET")
