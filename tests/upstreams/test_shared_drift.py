"""Drift seen by one replica is refused by all: the drifted tools' pins, as that replica's
connection listed them, go to the shared store (kind ``upstream_drift``); every replica's hub
reads them and refuses a call whose approved pin differs, until a re-approval (a publish with
the new pin) or a clean listing clears it."""

from __future__ import annotations

from pathlib import Path

from northstar.common import errors as E
from northstar.storage import open_store
from northstar.upstreams.hub import UpstreamHub
from northstar.upstreams.messages import ToolsChanged
from northstar.upstreams.pins import Drift, UpstreamTool
from northstar.upstreams.registry import UpstreamRegistry
from northstar.upstreams.secrets import SecretBox


def listed(pins: dict[str, str], drift: Drift) -> ToolsChanged:
    tools = {name: UpstreamTool(name=name, definition={"name": name}, pin=pin) for name, pin in pins.items()}
    return ToolsChanged("up1", tools, drift, "list_changed")


async def test_drift_seen_on_one_replica_is_refused_on_another_until_cleared(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 's.db'}") as storage:
        box = SecretBox(b"k" * 32)
        a, b = (UpstreamHub(UpstreamRegistry(storage.store, box)) for _ in range(2))
        await b.poll_once()
        assert b.shared_drift("up1", "search", "pin-1") is None

        await a._share_drift(listed({"search": "pin-2"}, Drift(changed=("search",), removed=("gone",))))
        await b.poll_once()  # what the bell (or the next tick) makes the watcher do
        refused = b.shared_drift("up1", "search", "pin-1")
        assert isinstance(refused, E.UpstreamDrift) and refused.details["changed"] == ["search"]
        assert isinstance(b.shared_drift("up1", "gone", "pin-x"), E.UpstreamDrift)
        assert b.shared_drift("up1", "search", "pin-2") is None  # re-approved at the new pin
        assert b.shared_drift("up1", "other", "pin-1") is None

        await a._share_drift(listed({"search": "pin-1"}, Drift()))  # listed as approved again
        await b.poll_once()
        assert b.shared_drift("up1", "search", "pin-1") is None
