"""A scope marked ``approval: required`` in a draft: the overlay carries it, publishing writes the
approval rule (not into the package), the tool's calls are held, the sandbox simulates the
approval in its trace, and a rollback restores the approval policy live with that version."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.workbench.workbench_kit import context, notes_spec, running

ADMIN = context(user="admin", admin=True)
NOTE = {"name": "n1", "content_text": "hello"}


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path) as services:
        yield services


def held_spec() -> dict[str, Any]:
    spec = notes_spec()
    spec["scopes"] = copy.deepcopy(spec["scopes"])
    spec["scopes"][0]["approval"] = "required"
    return spec


async def publish(svc: Any, spec: dict[str, Any]) -> dict[str, Any]:
    rec = await svc.drafts.save_draft(ADMIN.tenant, "notes", spec)
    result: dict[str, Any] = await svc.publisher.publish(ADMIN, "notes", rec.version)
    return result


async def test_the_overlay_holds_the_scope_and_the_sandbox_simulates(svc: Any) -> None:
    await publish(svc, held_spec())
    current = (await svc.publisher.overlay("notes"))["current"]
    assert current["approval_bindings"] == {"notes.write": "required", "notes.read": None}
    stored = await svc.publisher.package("notes", "1.0.0")
    assert all("approval" not in s for s in stored["spec"]["scopes"])
    assert svc.firearms.approval_rules() == {"notes.write": "firearm.approve"}

    await svc.firearms.grant("acme", "alice", "firearm.notes.write", granted_by="test")
    held = await svc.gateway.call_tool(context(), "notes.add_note", NOTE, wait_approval=False)
    assert not held.ok and held.error.code == "approval_pending"
    approval = await svc.approvals.get(ADMIN, held.error.details["approval_id"])
    assert approval["arguments"]["mime_type"] == "text/plain"  # the final arguments, presets included
    assert approval["state"] == "pending" and approval["principal"] == "acme/alice"

    for simulated, ok, code in (("approved", True, None), ("rejected", False, "approval_rejected"),
                                (None, False, "approval_pending")):
        mock = {"approval": simulated} if simulated else None
        result = await svc.sandbox.run(context(), "notes.add_note", NOTE, mock)
        assert result.ok is ok and (result.error or {}).get("code") == code
        [gate] = [t for t in result.trace if t["gate"] == "approval"]
        assert gate.get("simulated") == (simulated or "pending")
    assert len(await svc.approvals.list(ADMIN, "pending")) == 1  # the sandbox held nothing


async def test_a_new_version_without_approval_releases_and_rollback_restores(svc: Any) -> None:
    await publish(svc, held_spec())
    await publish(svc, notes_spec())
    assert svc.firearms.approval_rules() == {}
    await svc.publisher.rollback(ADMIN, "notes", "1.0.0")
    assert svc.firearms.approval_rules() == {"notes.write": "firearm.approve"}
