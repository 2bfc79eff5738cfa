"""The change bell: wakes the watchers of one process when the store says something changed.

Watchers (the firearms snapshot, the registry watcher, the upstreams watcher) follow the store
with ``changes_since``; polling alone bounds how late another replica's change is seen by the
polling interval. On PostgreSQL every save also sends ``NOTIFY northstar_changes`` (in its
transaction, so it is delivered at commit, and only then), and the store's listener rings this
bell: a subscribed watcher polls at once instead of at its next tick. Polling stays the
fallback: a lost listener connection, or SQLite (no notifications), costs at most one interval.

    with bell.subscribe({"activation_overlays"}) as sub:
        while True:
            await sub.wait(interval_s)      # a ring for one of its kinds, or the interval
            await poll_once()

A ring for ``None`` (the listener (re)connected: notifications may have been missed) wakes
every subscriber. A ring that arrives while the watcher polls is kept for its next ``wait``,
so no change is ever left for the fallback tick.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

import trio

#: The PostgreSQL channel; the payload is ``<schema>|<kind>`` so stores on one database but in
#: different schemas ignore each other's changes.
CHANNEL = "northstar_changes"


class Subscription:
    def __init__(self, kinds: frozenset[str] | None) -> None:
        self.kinds = kinds
        self._event = trio.Event()
        self.rings = 0

    def ring(self) -> None:
        self.rings += 1
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Until a ring (True) or ``timeout_s`` passed (False); a ring is consumed once."""
        with trio.move_on_after(timeout_s):
            await self._event.wait()
        rang = self._event.is_set()
        if rang:
            self._event = trio.Event()
        return rang


class ChangeBell:
    """Subscribers by kind; :meth:`ring` wakes those interested. Synchronous, trio thread only."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.rings = 0
        self.connected = False  # a notification source (the PostgreSQL listener) is attached

    def ring(self, kind: str | None) -> None:
        self.rings += 1
        for sub in list(self._subs):
            if kind is None or sub.kinds is None or kind in sub.kinds:
                sub.ring()

    @contextmanager
    def subscribe(self, kinds: Collection[str] | None = None) -> Iterator[Subscription]:
        sub = Subscription(None if kinds is None else frozenset(kinds))
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)


def payload(schema: str, kind: str) -> str:
    return f"{schema}|{kind}"


def parse_payload(text: str) -> tuple[str, str] | None:
    schema, sep, kind = text.partition("|")
    return (schema, kind) if sep else None
