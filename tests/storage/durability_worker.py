"""Durability worker, run as a subprocess by test_durability and killed with SIGKILL at random.

    python tests/storage/durability_worker.py URL RUN_ID

Saves drafts and appends audit records (several appenders at once, so batches form) until
killed. A line goes to stdout only AFTER the call returned, i.e. after the commit:

    S <draft_id> <version> <run_id> <i>     a draft version is durable
    A <seq> <run_id> <i>                    an audit record is durable
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import trio

from northstar.storage import Storage, open_store
from northstar.workbench.drafts.service import DraftService


@contextlib.asynccontextmanager
async def event_loop_for(url: str) -> AsyncIterator[None]:
    if url.startswith(("postgres://", "postgresql://")):
        import trio_asyncio

        async with trio_asyncio.open_loop():
            yield
    else:
        yield


def ack(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def save_forever(drafts: DraftService, run_id: str) -> None:
    i = 0
    while True:
        i += 1
        record = await drafts.save_draft("acme", f"d{i % 4}", {"run": run_id, "i": i}, actor="durability")
        ack(f"S {record.draft_id} {record.version} {run_id} {i}")


async def append_forever(storage: Storage, run_id: str, lane: int) -> None:
    i = lane
    while True:
        i += 10
        entry = await storage.audit.append({"tenant": "acme", "tool": "durability", "run": run_id, "i": i})
        ack(f"A {entry.seq} {run_id} {i}")


async def main(url: str, run_id: str) -> None:
    async with event_loop_for(url), open_store(url) as storage, trio.open_nursery() as nursery:
        nursery.start_soon(save_forever, DraftService(storage.store), run_id)
        for lane in range(4):
            nursery.start_soon(append_forever, storage, run_id, lane)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
