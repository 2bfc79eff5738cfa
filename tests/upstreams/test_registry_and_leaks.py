"""Registrations in the real store (sealed), a killed gateway leaves no upstream behind, and a
full scenario leaks the secret nowhere: logs, errors, status views, listings, raw database rows."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from northstar.common.errors import Conflict, NorthstarError, NotFound, UpstreamUnavailable
from northstar.storage import open_store
from northstar.upstreams import SecretBox, UpstreamRegistry, UpstreamService, key_path
from tests.pg import backend_url, base_url, pg_fetch
from tests.upstreams.kit import SECRET, SERVERS, gone, ready, running_host, stdio_spec, text_of

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[object, Dumper]]:
    """A real store on each backend, and a way to read every raw row of its database."""
    async with backend_url(request.param, tmp_path) as (url, schema), open_store(url) as storage:
        if request.param == "sqlite":
            yield storage.store, lambda: _sqlite_dump(tmp_path / "store.db")
        else:
            yield storage.store, lambda: _pg_dump(str(schema))


Dumper = Callable[[], Awaitable[str]]


async def _sqlite_dump(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


async def _pg_dump(schema: str) -> str:
    tables = await pg_fetch(base_url(), "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                            schema)
    rows: list[str] = []
    for (table,) in tables:
        found = await pg_fetch(base_url(), f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t')
        rows += [r[0] for r in found]
    return "\n".join(rows)


async def test_registrations_are_versioned_sealed_and_reload(store: tuple[object, Path], tmp_path: Path) -> None:
    backend, dump = store
    box = SecretBox.from_file(key_path(tmp_path, {}))
    registry = UpstreamRegistry(backend, box)
    stored = await registry.register(stdio_spec(), actor="admin", expected_version=0)
    assert stored.version == 1 and stored.spec["secrets"] == ["token"] and SECRET not in str(stored.to_dict())
    with pytest.raises(Conflict):
        await registry.register(stdio_spec(), actor="admin", expected_version=0)
    loaded = await registry.load("lowlevel")
    assert loaded.secret_values() == {"token": SECRET} and loaded.env == stdio_spec().env
    # A second process (a replica, a restart) with the same key file opens it too.
    again = UpstreamRegistry(backend, SecretBox.from_file(key_path(tmp_path, {})))
    assert (await again.load("lowlevel")).secret_values() == {"token": SECRET}
    assert [s.name for s in await registry.list()] == ["lowlevel"]
    rows = await dump()
    assert SECRET not in rows
    assert "sealed" in rows and "A256GCM" in rows  # the ciphertext is there, the value is not
    assert await registry.delete("lowlevel", actor="admin")
    assert await registry.get("lowlevel") is None and await registry.list() == []
    with pytest.raises(NotFound):
        await registry.load("lowlevel")


async def test_a_killed_gateway_leaves_no_upstream_process() -> None:
    script = str(SERVERS / "host_process.py")
    process = await trio.lowlevel.open_process([sys.executable, script], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(90):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(64)
                assert chunk, "the host process exited early"
                line += chunk
        upstream = int(line)
        os.kill(upstream, 0)  # alive
        process.send_signal(signal.SIGKILL)  # no cleanup of its own can run
        await gone(upstream, timeout=30)  # the guardian saw its parent go and took the group down
    finally:
        process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def test_the_secret_leaks_nowhere(store: tuple[object, Path], tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    backend, dump = store
    key_file = key_path(tmp_path, {})
    service_texts: list[str] = []
    async with running_host() as host:
        service = UpstreamService(UpstreamRegistry(backend, SecretBox.from_file(key_file)), host)
        stored, handle = await service.register(stdio_spec(call_timeout_s=0.5), actor="admin")
        service_texts.append(str(stored.to_dict()))
        await ready(handle)
        before = handle.status().connected_since
        replies = [
            await handle.call("leak", {"name": "UPSTREAM_TOKEN"}),
            await handle.call("leak_result", {"name": "UPSTREAM_TOKEN"}),
            await handle.call("rpc_error", {"text": SECRET}),  # a caller passing it in: scrubbed on the way back
            await handle.call("slow", {"seconds": 60}),
            await handle.call("crash"),
        ]
        with trio.fail_after(60):  # connected again, to a new process
            await handle.session.wait_until(lambda s: s.state == "ready" and s.connected_since != before)
        replies.append(await handle.call("echo", {"text": f"echo {SECRET}"}))
        with trio.fail_after(30):
            while not any("leaking to stderr" in r.getMessage() for r in caplog.records):
                await handle.call("echo", {"text": "round trip"})
        for reply in replies:
            service_texts.append(repr(reply.result))
            if reply.error is not None:
                err: NorthstarError = reply.error
                service_texts += [str(err), repr(err), str(err.details)]
        assert any(isinstance(r.error, UpstreamUnavailable) for r in replies)
        assert "[redacted]" in text_of(replies[1].unwrap()) and "[redacted]" in text_of(replies[-1].unwrap())
        service_texts.append(str(handle.status().to_dict()))
        service_texts.append(str((await handle.tools()).unwrap()))
        service_texts += [str(s.to_dict()) for s in await service.registry.list()]
        assert await service.delete("lowlevel", actor="admin")
    logs = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    assert "leaking to stderr: [redacted]" in logs  # the upstream did try
    for where, text in [("logs", logs), ("answers", "\n".join(service_texts)), ("database", await dump()),
                        ("key file", key_file.read_text())]:
        assert SECRET not in text, f"the secret appears in the {where}"
