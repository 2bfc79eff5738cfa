"""The audit export, verified the way a SIEM would: without northstar's code.

A store is filled with 10,000 records, then a real ``northstar serve`` on it streams the log
(``GET /v1/audit/export``) and ``northstar audit export`` writes it, on SQLite and on PostgreSQL.
The chain is then re-computed by :func:`verify` below, written from the specification in
docs/api.md and sharing nothing with ``northstar/storage/audit_chain.py``: SHA-256 over the
previous hash and ``{"record":...,"seq":N,"ts":"..."}``, sequence numbers without gaps, each
tenant's ``tenant_seq`` counted up. It is shown to catch a one-byte edit, a deletion and a
reorder, so its passing means something.

Resuming from a middle ``seq`` gives exactly the rest (and it chains onto what came before);
non-admins get 403. A second gateway shows the streaming is bounded: consumers that stop reading
hold no database connection (an export completes while more of them stall than SQLite has
reader connections), and each is disconnected after ``sse_send_timeout_s`` with its task and
descriptor released.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from northstar.common.config import Settings
from northstar.storage import open_store, options_for
from tests.harness import GatewayProcess, bearer, northstar_cli
from tests.pg import backend_url, require_backend
from tests.reliability.kit import connect, open_fds, wait_until

RECORDS = 10_000
GENESIS = "0" * 64
LINE_KEYS = {"seq", "ts", "prev_hash", "hash", "tenant_seq", "record"}


# -- the independent verifier ----------------------------------------------------------------------------
class ChainBroken(AssertionError):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq


class Chain:
    """The state a verifier carries from one line to the next (and from one export to the next)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.last_hash = GENESIS
        self.tenants: dict[str, int] = {}

    def feed(self, raw: bytes) -> None:
        line = json.loads(raw)
        seq = line.get("seq")
        if set(line) != LINE_KEYS:
            raise ChainBroken(self.last_seq + 1, f"not an entry line: {sorted(line)}")
        if seq != self.last_seq + 1:
            raise ChainBroken(self.last_seq + 1, f"expected seq {self.last_seq + 1}, got {seq}")
        if line["prev_hash"] != self.last_hash:
            raise ChainBroken(seq, "prev_hash does not link to the previous entry")
        # The record's bytes exactly as they stand in the line (the line is canonical JSON, its
        # keys sorted: "record" is followed by ,"seq": of the line itself, the last such text).
        start = raw.index(b'"record":') + len(b'"record":')
        record_bytes = raw[start:raw.rindex(b',"seq":')]
        canonical = json.dumps(line["record"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if record_bytes != canonical.encode("utf-8"):
            raise ChainBroken(seq, "the record is not in canonical form")
        body = b'{"record":' + record_bytes + b',"seq":' + str(seq).encode() + b',"ts":' + \
            json.dumps(line["ts"]).encode() + b"}"
        if hashlib.sha256(self.last_hash.encode("ascii") + body).hexdigest() != line["hash"]:
            raise ChainBroken(seq, "hash mismatch")
        tenant = line["record"].get("tenant")
        expected = None if tenant is None else self.tenants.get(str(tenant), 0) + 1
        if line["tenant_seq"] != expected:
            raise ChainBroken(seq, f"tenant_seq {line['tenant_seq']}, expected {expected}")
        if expected is not None:
            self.tenants[str(tenant)] = expected
        self.last_seq, self.last_hash = seq, line["hash"]


def verify(lines: list[bytes], chain: Chain | None = None) -> Chain:
    chain = chain or Chain()
    for raw in lines:
        chain.feed(raw)
    return chain


# -- helpers -----------------------------------------------------------------------------------------------
def record(i: int, pad: int = 0) -> dict[str, Any]:
    """Varied records: tenants and none, non-ASCII text, escapes, floats, nesting, booleans."""
    out: dict[str, Any] = {"event": "call", "i": i, "tool": "echo.ping", "decision": "allow" if i % 4 else "deny",
                           "latency_ms": i / 3, "args": {"message": f"zwölf ✓ \"{i}\"\n\t\\", "n": [i, None, True]}}
    if i % 10:
        out["tenant"] = f"tenant-{i % 7}"
    if pad:
        out["pad"] = "x" * pad
    return out


async def seed(data_dir: Path, store_url: str | None, n: int, pad: int = 0) -> None:
    """``n`` records appended by 100 concurrent writers, with the audit key of ``data_dir``."""
    values: dict[str, Any] = {"data_dir": data_dir, **({"store_url": store_url} if store_url else {})}
    settings = Settings.from_values(values)
    async with open_store(settings.resolved_store_url(), **options_for(settings)) as storage:

        async def writer(start: int) -> None:
            for i in range(start, n, 100):
                await storage.audit.append(record(i, pad))

        async with trio.open_nursery() as nursery:
            for start in range(100):
                nursery.start_soon(writer, start)


def export(url: str, key: str, since: int | None = None) -> tuple[httpx2.Response, list[bytes]]:
    params = {} if since is None else {"since": str(since)}
    with httpx2.stream("GET", f"{url}/v1/audit/export", params=params, headers=bearer(key), timeout=120) as resp:
        body = b"".join(resp.iter_bytes())
    assert body == b"" or body.endswith(b"\n")
    return resp, body.split(b"\n")[:-1]


def cli_export(gw: GatewayProcess, env: dict[str, str], *args: str) -> list[bytes]:
    done = northstar_cli(gw.data_dir, "audit", "export", *args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return [line.encode("utf-8") for line in done.stdout.splitlines()]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


# -- the acceptance test ------------------------------------------------------------------------------------
async def test_an_export_of_10000_records_verifies_independently(backend: str, tmp_path: Path) -> None:
    async with backend_url(backend, tmp_path) as (url, _schema):
        store_env = {"NORTHSTAR_STORE_URL": url} if backend == "postgres" else {}
        data_dir = tmp_path / "gw"
        await seed(data_dir, store_env.get("NORTHSTAR_STORE_URL"), RECORDS)
        await trio.to_thread.run_sync(check_export_on_a_real_gateway, data_dir, store_env)


def check_export_on_a_real_gateway(data_dir: Path, store_env: dict[str, str]) -> None:
    with GatewayProcess(data_dir, env=store_env, auth_mode=None) as gw:
        resp, lines = export(gw.url, gw.admin_key)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        through = int(resp.headers["x-audit-through-seq"])
        assert through >= RECORDS and len(lines) == through  # the seeded records and the gateway's own
        chain = verify(lines)
        assert chain.last_seq == through
        assert sum(1 for raw in lines if json.loads(raw)["record"].get("event") == "call") == RECORDS

        # Resuming from the middle: exactly the rest, and it chains onto the first part.
        middle = through // 2 + 17
        resp, rest = export(gw.url, gw.admin_key, since=middle)
        assert rest == lines[middle:]
        assert int(resp.headers["x-audit-through-seq"]) == through
        verify(rest, verify(lines[:middle]))
        assert export(gw.url, gw.admin_key, since=through)[1] == []

        # The command line writes the same lines from the store itself.
        assert cli_export(gw, store_env)[:through] == lines
        assert cli_export(gw, store_env, "--since", str(middle))[:through - middle] == rest

        # Only admins: a tenant's key gets 403, no credential 401, and no line either way.
        made = northstar_cli(data_dir, "keys", "create", "--tenant", "tenant-1", "--user", "alice", env=store_env)
        assert made.returncode == 0, made.stderr
        user_key = json.loads(made.stdout)["key"]
        for headers, status, code in ((bearer(user_key), 403, "admin_required"), ({}, 401, "unauthorized")):
            denied = httpx2.get(f"{gw.url}/v1/audit/export", headers=headers, timeout=30)
            assert denied.status_code == status
            assert denied.headers["content-type"] == "application/json"
            assert denied.json()["error"]["code"] == code
        bad = httpx2.get(f"{gw.url}/v1/audit/export", params={"since": "-1"}, headers=gw.admin_headers, timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["details"]["errors"][0]["path"] == "/since"

    check_the_verifier_catches_tampering(lines)


def check_the_verifier_catches_tampering(lines: list[bytes]) -> None:
    """The verifier above is not a formality: an edit, a deletion and a reorder each break it."""
    edited = list(lines)
    edited[1233] = lines[1233].replace(b'"event":"call"', b'"event":"calm"', 1)  # one byte
    assert edited[1233] != lines[1233]
    with pytest.raises(ChainBroken) as caught:
        verify(edited)
    assert caught.value.seq == 1234
    with pytest.raises(ChainBroken) as caught:
        verify([*lines[:500], *lines[501:]])
    assert caught.value.seq == 501
    with pytest.raises(ChainBroken) as caught:
        verify([*lines[:700], lines[701], lines[700], *lines[702:]])
    assert caught.value.seq == 701


# -- consumers that stop reading ----------------------------------------------------------------------------
SEND_TIMEOUT_S = 8.0
STALLED = 6  # more than the SQLite store's 4 reader connections


@pytest.fixture(scope="module")
def stall_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("export-stall")
    trio.run(seed, data_dir, None, RECORDS, 400)  # ~7 MB of lines: far more than socket buffers hold
    with GatewayProcess(data_dir, env={"NORTHSTAR_SSE_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S)}, auth_mode=None) as gw:
        yield gw


def stalled_export(gw: GatewayProcess) -> socket.socket:
    """An export request on a socket with a small receive buffer, its answer's head read, then nothing."""
    sock = connect(gw, rcvbuf=4096)
    sock.sendall(f"GET /v1/audit/export HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
                 f"Authorization: Bearer {gw.admin_key}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1024)
        assert chunk, "closed before the answer's head"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


def drained_until_closed(sock: socket.socket, within_s: float) -> int:
    """Bytes read until the server closes the connection (-1 if it does not within ``within_s``)."""
    sock.settimeout(within_s)
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except TimeoutError:
        return -1
    except ConnectionResetError:
        pass
    return total


def runtime_tasks(gw: GatewayProcess) -> int:
    counts = httpx2.get(f"{gw.url}/v1/ops/runtime", headers=gw.admin_headers, timeout=30).json()
    return int(counts["tasks"])


def test_consumers_that_stop_reading_pin_nothing_and_are_dropped(stall_gateway: GatewayProcess) -> None:
    gw = stall_gateway
    assert gw.proc is not None
    _, full = export(gw.url, gw.admin_key)  # warms up, and the size of a whole export
    full_bytes = sum(len(line) + 1 for line in full)
    baseline_fds, baseline_tasks = open_fds(gw.proc.pid), runtime_tasks(gw)
    dropped_before = gw.stderr_text().count("client stopped reading")

    socks = [stalled_export(gw) for _ in range(STALLED)]
    try:
        # While they all stall, a whole export still completes and verifies: a stalled consumer
        # holds no reader connection between pages (there are 4).
        _, again = export(gw.url, gw.admin_key)
        assert again[:len(full)] == full
        verify(again)
        assert gw.stderr_text().count("client stopped reading") - dropped_before < STALLED, \
            "the stalled consumers were dropped before the check ran: raise SEND_TIMEOUT_S"

        # Each is disconnected once a write made no progress for sse_send_timeout_s.
        assert wait_until(lambda: gw.stderr_text().count("client stopped reading") - dropped_before >= STALLED,
                          SEND_TIMEOUT_S + 60, interval_s=0.2)
        for sock in socks:
            got = drained_until_closed(sock, 30)
            assert 0 <= got < full_bytes  # closed by the server, part-way through
    finally:
        for sock in socks:
            sock.close()
    # Their tasks, connections and pages are gone; the gateway serves on.
    assert wait_until(lambda: open_fds(gw.proc.pid) <= baseline_fds + 2, 30), (open_fds(gw.proc.pid), baseline_fds)
    assert wait_until(lambda: runtime_tasks(gw) <= baseline_tasks, 30), (runtime_tasks(gw), baseline_tasks)
    verify(export(gw.url, gw.admin_key)[1])
    report = httpx2.get(f"{gw.url}/v1/audit/verify", headers=gw.admin_headers, timeout=60).json()
    assert report["ok"] is True
