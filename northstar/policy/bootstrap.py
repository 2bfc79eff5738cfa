"""The first admin credential, and what ``serve`` says about identity when it starts.

A fresh gateway trusts no identity header, so someone must hold the first admin credential.
On its first start ``serve`` mints one admin API key (provenance ``bootstrap``), writes it to
``<data_dir>/admin.key`` (0600; the key is never logged) and logs the file's path once; later
starts log where it is while the file exists. Several processes on one store (replicas on
PostgreSQL, a second ``serve`` on the same data directory) make exactly one: the key record is
saved first, then a marker (``bootstrap/admin_key``) with ``expected_version=0``; whoever loses
that compare-and-set revokes its own key and keeps no file. Only the winner moves its file into
place, so ``admin.key`` always holds the key the store knows.

``northstar stdio`` never mints one: its identity comes from its flags, and it is never admin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from northstar.common import errors as E
from northstar.common.identity import new_request_id
from northstar.policy.auth import KeyService
from northstar.policy.firearms import GLOBAL_TENANT, iso_now
from northstar.storage import kinds

log = logging.getLogger("northstar")

BOOTSTRAP_ID = "admin_key"
BOOTSTRAP_TENANT = "default"
BOOTSTRAP_USER = "admin"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What happened to the bootstrap admin key at this start."""

    created: bool
    key_id: str | None
    path: Path
    on_disk: bool

    def message(self) -> str:
        if self.on_disk:
            return f"admin key: {self.path}"
        return (f"admin key: not in {self.path} (another process on this store made it, or the file was removed); "
                "`northstar keys create --admin` makes another")


def _write_private(path: Path, text: str) -> Path:
    """A new 0600 file next to ``path`` holding ``text`` (fsynced), to be renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    return tmp


def _discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def ensure_admin_key(keys: KeyService, path: Path, *, audit: Any = None) -> Bootstrap:
    """Mint the bootstrap admin key into ``path`` unless this store already has one."""
    store = keys.store
    marker = await store.get(GLOBAL_TENANT, kinds.BOOTSTRAP, BOOTSTRAP_ID)
    if marker is not None and marker.data is not None:
        return Bootstrap(False, marker.data.get("key_id"), path, await trio.to_thread.run_sync(path.exists))
    await trio.to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
    secret, key = await keys.create(BOOTSTRAP_TENANT, BOOTSTRAP_USER, admin=True, label="bootstrap",
                                    actor="bootstrap", provenance="bootstrap")
    tmp = await trio.to_thread.run_sync(_write_private, path, secret + "\n")
    try:
        await store.save(GLOBAL_TENANT, kinds.BOOTSTRAP, BOOTSTRAP_ID, {"key_id": key.key_id, "created_at": iso_now()},
                         expected_version=0, actor="bootstrap")
    except E.Conflict:  # another process on this store won: its key is the bootstrap key
        await trio.to_thread.run_sync(_discard, tmp)
        await keys.revoke(key.key_id, actor="bootstrap")
        again = await store.get(GLOBAL_TENANT, kinds.BOOTSTRAP, BOOTSTRAP_ID)
        winner = None if again is None or again.data is None else again.data.get("key_id")
        return Bootstrap(False, winner, path, await trio.to_thread.run_sync(path.exists))
    except BaseException:
        await trio.to_thread.run_sync(_discard, tmp)
        raise
    await trio.to_thread.run_sync(os.replace, tmp, path)
    if audit is not None:
        await audit.append({"event": "policy", "action": "key_create", "request_id": new_request_id(),
                            "principal": "bootstrap", "transport": "cli",
                            "key_id": key.key_id, "key_tenant": key.tenant, "key_user": key.user, "admin": True,
                            "provenance": "bootstrap"})
    return Bootstrap(True, key.key_id, path, True)


async def announce_identity(settings: Any, keys: KeyService, *, audit: Any = None) -> Bootstrap:
    """``serve``'s start-up lines about identity: the admin key, header trust, unconfirmed keys."""
    boot = await ensure_admin_key(keys, settings.admin_key_file, audit=audit)
    # The path only, never the key; at WARNING when new, so a quiet log level still shows it once.
    log.log(logging.WARNING if boot.created else logging.INFO, boot.message(),
            extra={"admin_key_file": str(boot.path), "admin_key_created": boot.created})
    for line in header_warnings(settings):
        log.warning(line)
    stale = await keys.unconfirmed()
    if stale:
        ids = ", ".join(sorted(k.key_id for k in stale))
        log.warning(f"admin keys not honoured until an operator confirms them: {ids}. They were minted before "
                    "northstar recorded how keys were issued; run `northstar keys adopt KEY_ID` for each one you "
                    "trust, and revoke the others (`northstar keys revoke KEY_ID`)",
                    extra={"unconfirmed_keys": sorted(k.key_id for k in stale)})
    return boot


def header_warnings(settings: Any) -> list[str]:
    """The loud lines for a gateway that trusts identity headers (and for settings that no longer exist)."""
    lines = []
    if settings.auth_mode == "headers":
        lines.append("auth_mode=headers: X-Tenant-Id / X-User-Id are trusted as sent, from any client that reaches "
                     "this port (a reverse proxy's too): anyone can act as any user. Identity headers never make an "
                     "admin. For local development only; the default (api_key) trusts no header")
    if settings.auth_mode == "auto":
        lines.append("auth_mode=auto is the old name of api_key: identity headers are not trusted. Set "
                     "NORTHSTAR_AUTH_MODE=api_key (or headers, explicitly, for local development)")
    if any(k.upper() == "NORTHSTAR_ADMIN_USERS" for k in os.environ):
        lines.append("NORTHSTAR_ADMIN_USERS is no longer read: no identity header makes an admin. Use the bootstrap "
                     "admin key or `northstar keys create --admin`")
    return lines
