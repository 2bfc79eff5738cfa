"""DraftService on both backends: versions, reads by version, NotFound, validation, the hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from northstar.common.errors import Conflict, InvalidDefinition, NotFound, ValidationFailed
from northstar.storage import open_store
from northstar.workbench.drafts import MAX_SPEC_BYTES, DraftRecord, DraftService
from northstar.workbench.drafts.service import draft_history, get_draft, list_drafts, save_draft
from tests.pg import backend_url, require_backend

SPEC = {"name": "echo", "description": "Echo the input", "input_schema": {"type": "object"}}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def drafts_backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
async def store(drafts_backend: str, tmp_path: Path) -> AsyncIterator[Any]:
    async with backend_url(drafts_backend, tmp_path) as (url, _schema), open_store(url) as storage:
        yield storage.store


@pytest.fixture
def drafts(store: Any) -> DraftService:
    return DraftService(store)


async def test_versions_and_reads(drafts: DraftService) -> None:
    v1 = await drafts.save_draft("acme", "echo", SPEC, actor="alice")
    v2 = await drafts.save_draft("acme", "echo", {**SPEC, "description": "v2"}, expected_version=1, actor="bob")
    assert (v1.version, v2.version, v1.schema_version) == (1, 2, 1)
    assert (v1.spec, v1.actor, v2.actor) == (SPEC, "alice", "bob")
    assert await drafts.get_draft("acme", "echo") == v2
    assert await drafts.get_draft("acme", "echo", 1) == v1
    assert [d.version for d in await drafts.draft_history("acme", "echo")] == [1, 2]
    assert v2.to_dict() == {"draft_id": "echo", "version": 2, "spec": {**SPEC, "description": "v2"},
                            "schema_version": 1, "created_at": v2.created_at, "actor": "bob"}


async def test_stored_value_has_the_schema_version(drafts: DraftService, store: Any) -> None:
    await drafts.save_draft("acme", "echo", SPEC)
    record = await store.get("acme", "workbench_drafts", "echo")
    assert record.data == {"schema_version": 1, "spec": SPEC}


async def test_not_found(drafts: DraftService) -> None:
    with pytest.raises(NotFound):
        await drafts.get_draft("acme", "missing")
    await drafts.save_draft("acme", "echo", SPEC)
    with pytest.raises(NotFound):
        await drafts.get_draft("acme", "echo", 2)
    with pytest.raises(NotFound):
        await drafts.get_draft("globex", "echo")
    assert await drafts.draft_history("acme", "missing") == []


async def test_conflict_carries_the_current_version(drafts: DraftService) -> None:
    await drafts.save_draft("acme", "echo", SPEC)
    with pytest.raises(Conflict) as info:
        await drafts.save_draft("acme", "echo", SPEC, expected_version=0)
    assert info.value.details["current_version"] == 1


async def test_list_with_pagination(drafts: DraftService) -> None:
    for name in ["c", "a", "b", "d"]:
        await drafts.save_draft("acme", name, {"n": name})
    page = await drafts.list_drafts("acme", limit=3)
    assert [d.draft_id for d in page] == ["a", "b", "c"]
    assert [d.draft_id for d in await drafts.list_drafts("acme", after="c")] == ["d"]
    await drafts.delete_draft("acme", "b")
    assert [d.draft_id for d in await drafts.list_drafts("acme")] == ["a", "c", "d"]
    with pytest.raises(NotFound):
        await drafts.get_draft("acme", "b")
    assert [d.version for d in await drafts.draft_history("acme", "b")] == [1]


@pytest.mark.parametrize("draft_id", ["", "Echo", "-x", "a b", "x" * 65, "a/b", "ü", None])
async def test_bad_draft_ids(drafts: DraftService, draft_id: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        await drafts.save_draft("acme", draft_id, SPEC)
    assert info.value.details["errors"][0]["path"] == "/draft_id"


@pytest.mark.parametrize("spec", [[1, 2], "text", None, {"x": float("nan")}, {"x": {1, 2}},
                                  {"big": "x" * MAX_SPEC_BYTES}])
async def test_bad_specs(drafts: DraftService, spec: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        await drafts.save_draft("acme", "echo", spec)
    assert info.value.details["errors"][0]["path"] == "/spec"


async def test_spec_just_under_the_limit_is_accepted(drafts: DraftService) -> None:
    spec = {"big": "x" * (MAX_SPEC_BYTES - len('{"big":""}'))}
    assert (await drafts.save_draft("acme", "echo", spec)).spec == spec


async def test_validate_hook_transforms_or_rejects(store: Any) -> None:
    def validate(spec: dict[str, Any]) -> dict[str, Any]:
        if "name" not in spec:
            raise InvalidDefinition("a tool needs a name")
        if spec.get("bad"):
            raise ValueError("bad is not allowed")
        return {**spec, "validated": True}

    drafts = DraftService(store, validate=validate)
    saved = await drafts.save_draft("acme", "echo", SPEC)
    assert saved.spec == {**SPEC, "validated": True}
    with pytest.raises(InvalidDefinition):
        await drafts.save_draft("acme", "echo", {"description": "nameless"})
    with pytest.raises(ValidationFailed, match="bad is not allowed"):
        await drafts.save_draft("acme", "echo", {**SPEC, "bad": True})
    assert [d.version for d in await drafts.draft_history("acme", "echo")] == [1]


async def test_module_level_aliases(drafts: DraftService) -> None:
    saved: DraftRecord = await save_draft(drafts, "acme", "echo", SPEC)
    assert await get_draft(drafts, "acme", "echo") == saved
    assert await list_drafts(drafts, "acme") == [saved]
    assert await draft_history(drafts, "acme", "echo") == [saved]
