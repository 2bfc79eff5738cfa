"""The audit export's reading and its lines, on both backends.

Pages come in ``seq`` order without gaps or repeats whatever the page size, stop at the head the
export began with (entries appended meanwhile wait for the next export), and each line is the
entry in canonical JSON, so the record's bytes in the line are the bytes its hash covers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import trio

from northstar.common.errors import ValidationFailed
from northstar.storage import Storage
from northstar.storage.audit_chain import GENESIS_HASH, entry_hash
from northstar.storage.audit_export import export_line, export_pages

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def rec(i: int) -> dict[str, object]:
    return {"tenant": f"t{i % 3}", "event": "call", "i": i, "ratio": i / 7, "text": "zwölf ✓ \"q\" \\ \n"}


async def collect(storage: Storage, since: int, through: int, page_size: int) -> list[list[int]]:
    return [[e.seq for e in page] async for page in export_pages(storage.audit, since, through, page_size)]


async def test_head_seq_follows_the_log(storage: Storage) -> None:
    assert await storage.audit.head_seq() == 0
    for i in range(5):
        await storage.audit.append(rec(i))
    assert await storage.audit.head_seq() == 5


@pytest.mark.parametrize("page_size", [1, 3, 7, 1000])
async def test_pages_cover_since_to_through_once_in_order(storage: Storage, page_size: int) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(storage.audit.append, rec(i))
    pages = await collect(storage, 0, 20, page_size)
    assert [seq for page in pages for seq in page] == list(range(1, 21))
    assert all(len(page) <= page_size for page in pages)
    assert [s for p in await collect(storage, 13, 20, page_size) for s in p] == list(range(14, 21))
    assert await collect(storage, 20, 20, page_size) == []


async def test_an_export_stops_at_the_head_it_began_with(storage: Storage) -> None:
    for i in range(10):
        await storage.audit.append(rec(i))
    through = await storage.audit.head_seq()
    got: list[int] = []
    async for page in export_pages(storage.audit, 0, through, page_size=4):
        got.extend(e.seq for e in page)
        await storage.audit.append(rec(100 + len(got)))  # the log grows while the export runs
    assert got == list(range(1, 11))
    assert await storage.audit.head_seq() == 13


async def test_since_out_of_range_is_refused(storage: Storage) -> None:
    with pytest.raises(ValidationFailed):
        await collect(storage, -1, 5, 10)
    with pytest.raises(ValidationFailed):
        await collect(storage, 2**63, 2**63 + 5, 10)


async def test_a_line_is_canonical_and_its_record_bytes_are_what_the_hash_covers(storage: Storage) -> None:
    first = await storage.audit.append(rec(1))
    second = await storage.audit.append({"no_tenant": True, "nested": {"b": [1, 2.5, None], "a": "é"}})
    for entry in (first, second):
        line = export_line(entry)
        assert line.endswith("\n") and line.count("\n") == 1
        obj = json.loads(line)
        assert obj == {"seq": entry.seq, "ts": entry.ts, "prev_hash": entry.prev_hash, "hash": entry.hash,
                       "tenant_seq": entry.tenant_seq, "record": entry.record}
        assert line[:-1] == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        raw = line.encode("utf-8")
        record = raw[raw.index(b'"record":') + len(b'"record":'):raw.rindex(b',"seq":')]
        body = b'{"record":' + record + b',"seq":%d,"ts":"%s"}' % (entry.seq, entry.ts.encode())
        assert hashlib.sha256(entry.prev_hash.encode() + body).hexdigest() == entry.hash
        assert entry_hash(entry.prev_hash, entry.seq, entry.ts, entry.record) == entry.hash
    assert (first.prev_hash, second.prev_hash) == (GENESIS_HASH, first.hash)
    assert (first.tenant_seq, second.tenant_seq) == (1, None)


async def test_the_verifier_in_the_docs_verifies_an_export_and_catches_an_edit(storage: Storage) -> None:
    """docs/api.md's reference verifier, run as printed, on an export (and on a tampered one)."""
    docs = DOCS.read_text()
    section = docs.split("### Exporting and verifying without northstar", 1)[1]
    namespace: dict[str, object] = {}
    exec(section.split("```python\n", 1)[1].split("```", 1)[0], namespace)
    verify = namespace["verify"]
    for i in range(30):
        await storage.audit.append(rec(i) if i % 4 else {"event": "policy", "n": i})
    lines = [export_line(e).rstrip("\n").encode() async for page in export_pages(storage.audit, 0, 30, 7)
             for e in page]
    last_seq, last_hash, tenants = verify(lines[:12])  # type: ignore[operator]
    assert (last_seq, tenants) == (12, {"t1": 3, "t2": 3, "t0": 3})
    assert verify(lines[12:], last_seq, last_hash, tenants)[0] == 30  # type: ignore[operator]
    with pytest.raises(AssertionError):
        verify([*lines[:5], lines[5].replace(b'"event":"call"', b'"event":"cell"'), *lines[6:]])  # type: ignore[operator]
