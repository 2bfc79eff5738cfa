"""The audit log as JSON lines, for a SIEM to ingest and verify without northstar.

One line per entry, in ``seq`` order, each line itself canonical JSON (sorted keys, no spaces,
UTF-8 as is)::

    {"hash":"<64 hex>","prev_hash":"<64 hex>","record":{...},"seq":N,"tenant_seq":M|null,"ts":"..."}

so the bytes of ``record`` in the line are exactly the bytes the entry's hash covers, and
``hash = sha256_hex(prev_hash + '{"record":' + record + ',"seq":' + N + ',"ts":"' + ts + '"}')``
(:func:`~.audit_chain.entry_hash`; docs/api.md spells the computation out).

:func:`export_pages` reads the log a page at a time from the store (no cursor or transaction is
held between pages, so a consumer that stalls holds no database connection) up to ``through``,
the head when the export began: it ends even while the log grows, and a consumer resumes with
``since`` = the last ``seq`` it got.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from northstar.common.limits import MAX_SEQ, check_int

from .core import canonical_json
from .records import AuditEntry

#: Entries read from the store per page: what an export holds in memory at once.
EXPORT_PAGE = 1000
MEDIA_TYPE = "application/x-ndjson"


def export_line(entry: AuditEntry) -> str:
    """One entry as a line of canonical JSON (newline included)."""
    line = canonical_json({"seq": entry.seq, "ts": entry.ts, "prev_hash": entry.prev_hash, "hash": entry.hash,
                           "tenant_seq": entry.tenant_seq, "record": entry.record})
    return line + "\n"


async def export_pages(audit: Any, since: int, through: int,
                       page_size: int = EXPORT_PAGE) -> AsyncGenerator[list[AuditEntry], None]:
    """The entries with ``since < seq <= through``, a page at a time, ascending.

    ``audit`` is a :class:`~.audit.GroupCommitAuditLog`. A missing ``seq`` (a deleted entry) is
    not skipped over silently by the consumer: the next entry's ``prev_hash`` gives it away.
    """
    after = check_int("since", since, 0, MAX_SEQ)
    while after < through:
        page = [e for e in await audit.query(tenant=None, after_seq=after, limit=page_size) if e.seq <= through]
        if not page:
            return
        yield page
        after = page[-1].seq
