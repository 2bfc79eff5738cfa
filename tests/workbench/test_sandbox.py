"""Sandbox runs on a real in-process runtime: real gate chain, mock policy, isolated side effects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from northstar.common import errors as E
from tests.workbench.workbench_kit import context, notes_spec, running

NOTE = {"name": "hello", "mime_type": "text/plain", "content_text": "hi there"}
WRITE = "firearm.media.write"


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path) as services:
        yield services


async def live_assets(svc: Any, ctx: Any) -> list[Any]:
    result = await svc.gateway.call_tool(ctx, "media_v2.list_assets", {})
    assert result.ok, result.error
    assets: list[Any] = result.output["assets"]
    return assets


def leftovers(svc: Any) -> list[Path]:
    root = Path(svc.settings.data_dir) / "sandbox"
    return list(root.iterdir()) if root.exists() else []


async def test_a_sandbox_write_is_audited_as_sandbox_and_leaves_no_trace(svc: Any) -> None:
    alice = context(user="alice")
    await svc.firearms.grant("acme", "alice", WRITE, granted_by="test")
    result = await svc.sandbox.run(alice, "media_v2.create_asset", NOTE)
    assert result.ok and result.sandbox and result.error is None
    assert result.tool == "media_v2.create_asset"
    assert result.output["name"] == "hello" and result.output["asset_id"].startswith("ast_")
    assert [t["gate"] for t in result.trace] == ["identity", "resolve", "firearm", "input", "limits"]
    entry = await svc.audit.get(result.audit_seq)
    assert entry.record["sandbox"] is True and entry.record["transport"] == "sandbox"
    assert (entry.record["tenant"], entry.record["user"]) == ("acme", "alice")
    assert await live_assets(svc, alice) == []
    assert leftovers(svc) == []


async def test_a_mock_grant_lets_a_user_dry_run_a_write_the_live_policy_denies(svc: Any) -> None:
    bob = context(user="bob")
    dry = await svc.sandbox.run(bob, "media_v2__create_asset", NOTE, {"grants": [WRITE]})
    assert dry.ok, dry.error
    live = await svc.gateway.call_tool(bob, "media_v2.create_asset", NOTE)
    assert not live.ok and live.error.code == "firearm_required"
    assert await live_assets(svc, bob) == []


async def test_a_denial_is_a_sandbox_result_with_the_deciding_gate(svc: Any) -> None:
    result = await svc.sandbox.run(context(user="bob"), "media_v2.create_asset", NOTE)
    assert not result.ok and result.output is None
    assert result.error["code"] == "firearm_required" and result.error["http_status"] == 403
    assert result.error["details"] == {"scope": "media.write", "firearm": WRITE}
    assert result.trace[-1] == {"gate": "firearm", "decision": "deny", "code": "firearm_required",
                                "reason": "scope media.write requires firearm firearm.media.write"}
    forced = await svc.sandbox.run(context(), "echo.ping", {}, {"force_deny": "what if"})
    assert not forced.ok and forced.trace[0]["gate"] == "identity" and forced.error["code"] == "policy_denied"
    unknown = await svc.sandbox.run(context(), "nope.nothing", {})
    assert not unknown.ok and unknown.error["code"] == "unknown_tool"


async def test_the_runtime_hands_out_one_runner(svc: Any) -> None:
    result = await svc.sandbox.run(context(), "echo.ping", {"message": "yo"})
    assert result.ok and result.output["message"] == "yo"
    assert result.to_dict()["sandbox"] is True
    with pytest.raises(E.ValidationFailed):
        await svc.sandbox.run(context(), "echo.ping", {}, {"grants": 5})


async def test_an_unpublished_draft_runs_under_its_own_firearms(svc: Any) -> None:
    alice = context(user="alice")
    await svc.drafts.save_draft("acme", "notes", notes_spec())
    spec2 = notes_spec()
    spec2["scopes"][0]["operations"][0]["input"]["restrict"]["name"] = {"maxLength": 3}
    await svc.drafts.save_draft("acme", "notes", spec2)

    denied = await svc.sandbox.run(alice, "notes.add_note", {"name": "n", "content_text": "x"}, draft_id="notes")
    assert not denied.ok and denied.error["details"]["firearm"] == "firearm.notes.write"

    mock = {"grants": ["firearm.notes.write"]}
    ok = await svc.sandbox.run(alice, "notes__add_note", {"name": "long", "content_text": "x"}, mock,
                               draft_id="notes", draft_version=1)
    assert ok.ok, ok.error
    assert ok.output["mime_type"] == "text/plain" and ok.tool == "notes.add_note"
    entry = await svc.audit.get(ok.audit_seq)
    assert entry.record["sandbox"] is True and entry.record["tool"] == "notes"

    narrowed = await svc.sandbox.run(alice, "notes.add_note", {"name": "long", "content_text": "x"}, mock,
                                     draft_id="notes")  # version 2: name at most 3 characters
    assert not narrowed.ok and narrowed.error["code"] == "validation_error"

    read = await svc.sandbox.run(alice, "notes.list_notes", {}, draft_id="notes")
    assert read.ok and read.output == {"assets": [], "next_cursor": None}

    assert svc.catalog.resolve("notes.add_note") is None  # never published
    assert await live_assets(svc, alice) == []
    assert leftovers(svc) == []


async def test_draft_errors(svc: Any) -> None:
    with pytest.raises(E.NotFound):
        await svc.sandbox.run(context(), "notes.add_note", {}, draft_id="missing")
    await svc.drafts.save_draft("acme", "notes", notes_spec())
    with pytest.raises(E.UnknownTool):
        await svc.sandbox.run(context(), "notes.delete_everything", {}, draft_id="notes")
    with pytest.raises(E.UnknownTool):
        await svc.sandbox.run(context(), "other.add_note", {}, draft_id="notes")
    assert leftovers(svc) == []
