"""D3: kill -9 a writer at random moments; every acknowledged write must survive.

A worker process (durability_worker.py) saves drafts and appends audit records, printing an
ack line only after each call returned. We SIGKILL it at a random moment (after a random number
of acks, plus a random offset of a few milliseconds, sometimes before the first ack: during
start-up and migrations), many rounds against the same database, two workers at a time (so one
is often killed while the other waits on its lock or must recover after it), then check that
every ack is present, versions are contiguous, the SQLite file is intact and the audit chain
verifies.

``NORTHSTAR_DURABILITY_ROUNDS`` (default 30) and ``NORTHSTAR_DURABILITY_SEED`` tune a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trio

from northstar.storage import open_store
from northstar.workbench.drafts.service import DraftService

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("durability_worker.py")
ROUNDS = int(os.environ.get("NORTHSTAR_DURABILITY_ROUNDS", "30"))
SEED = int(os.environ.get("NORTHSTAR_DURABILITY_SEED", str(random.randrange(1 << 30))))


@dataclass
class Acks:
    saves: list[tuple[str, int, str, int]] = field(default_factory=list)
    audits: list[tuple[int, str, int]] = field(default_factory=list)

    def take(self, line: str) -> None:
        parts = line.split()
        if parts[0] == "S":
            self.saves.append((parts[1], int(parts[2]), parts[3], int(parts[4])))
        elif parts[0] == "A":
            self.audits.append((int(parts[1]), parts[2], int(parts[3])))
        else:
            raise AssertionError(f"unexpected worker output {line!r}")

    @property
    def count(self) -> int:
        return len(self.saves) + len(self.audits)

    def merge(self, other: Acks) -> None:
        self.saves += other.saves
        self.audits += other.audits


def read_text(path: Path) -> str:
    return path.read_text(errors="replace")


async def one_round(url: str, run_id: str, rng: random.Random, all_acks: Acks, stderr_path: Path) -> None:
    target = rng.choice([0, rng.randint(1, 10), rng.randint(10, 60)])
    acks = Acks()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with stderr_path.open("wb") as stderr:
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(WORKER), url, run_id], stdout=subprocess.PIPE, stderr=stderr, env=env
        )
    assert proc.stdout is not None
    pending = b""
    with trio.fail_after(30):
        if target == 0:
            await trio.sleep(rng.uniform(0.05, 0.5))  # a random moment during start-up
        while acks.count < target:
            chunk = await proc.stdout.receive_some()
            assert chunk, f"worker exited early: {read_text(stderr_path)}"
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                acks.take(line.decode())
        await trio.sleep(rng.uniform(0, 0.004))  # land somewhere inside the next write
        proc.send_signal(signal.SIGKILL)
        # lines written before the kill are acks too: read to EOF (a torn last line is not)
        while chunk := await proc.stdout.receive_some():
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                acks.take(line.decode())
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL, read_text(stderr_path)
    all_acks.merge(acks)


async def check_everything_acked_survived(url: str, acks: Acks, backend: str) -> None:
    async with open_store(url) as storage:
        drafts = DraftService(storage.store)
        for draft_id, version, run_id, i in acks.saves:
            record = await drafts.get_draft("acme", draft_id, version)
            assert record.spec == {"run": run_id, "i": i}, (draft_id, version)
        for draft_id in {s[0] for s in acks.saves}:
            versions = [r.version for r in await drafts.draft_history("acme", draft_id)]
            assert versions == list(range(1, len(versions) + 1))
        for seq, run_id, i in acks.audits:
            entry = await storage.audit.get(seq)
            assert entry is not None and (entry.record["run"], entry.record["i"]) == (run_id, i), seq
        report = await storage.audit.verify()
        assert report.ok, report
        assert report.count >= len(acks.audits)
        if backend == "sqlite":
            assert await storage.store.integrity_check() == "ok"


async def test_acknowledged_writes_survive_sigkill(store_url: str, backend: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    acks = Acks()
    for n in range(0, ROUNDS, 2):
        async with trio.open_nursery() as nursery:
            for run in (n, n + 1):
                nursery.start_soon(one_round, store_url, f"r{run}", random.Random(rng.random()), acks,
                                   tmp_path / f"worker-{run % 2}.stderr")
    assert acks.saves and acks.audits, f"seed {SEED}: no acks at all"
    await check_everything_acked_survived(store_url, acks, backend)
