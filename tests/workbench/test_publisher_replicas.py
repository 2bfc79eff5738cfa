"""Two gateways on one store: publishing through one makes the tool live on the other."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from northstar.common.config import Settings
from tests.pg import backend_url, require_backend
from tests.workbench.workbench_kit import WorkbenchRuntime, context, notes_spec

ADMIN = context(user="admin", admin=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


async def until(predicate: object, timeout: float = 5.0) -> None:
    """Poll ``predicate`` (bounded): the replica's watcher polls every 0.5 s on the real clock."""
    with trio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.05)


async def test_publish_on_one_replica_goes_live_on_the_other(backend: str, tmp_path: Path) -> None:
    async with backend_url(backend, tmp_path) as (url, _schema):
        # Replicas of one store share its audit key (each has its own data directory).
        shared = {"store_url": url, "log_level": "WARNING", "audit_key_file": tmp_path / "audit.key"}
        a = WorkbenchRuntime(Settings(data_dir=tmp_path / "a", **shared))
        b = WorkbenchRuntime(Settings(data_dir=tmp_path / "b", **shared))
        async with a.running() as sa, b.running() as sb:
            await sa.drafts.save_draft("acme", "notes", notes_spec())
            published = await sa.publisher.publish(ADMIN, "notes", 1)
            digest = published["package"]["content_hash"]
            await until(lambda: sb.catalog.resolve("notes.add_note") is not None)
            assert sb.catalog.resolve("notes.add_note").tool.package_hash == digest
            note = {"name": "n", "content_text": "x"}
            denied = await sb.gateway.call_tool(context(user="alice"), "notes.add_note", note)
            assert not denied.ok and denied.error.code == "firearm_required"

            await sa.publisher.unpublish(ADMIN, "notes")
            await until(lambda: sb.catalog.resolve("notes.add_note") is None)
