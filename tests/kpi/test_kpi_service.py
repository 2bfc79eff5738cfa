"""KpiService on both backends: save, list per tool, delete, tenant isolation."""

from __future__ import annotations

import pytest

from northstar.common.errors import Conflict, NotFound, ValidationFailed
from northstar.kpi import KpiBinding, KpiService
from northstar.storage import Storage


def binding(tool: str, kpi_id: str, **kw: object) -> KpiBinding:
    fields: dict[str, object] = {"tool_name": tool, "kpi_id": kpi_id, "metric": "latency_p99_ms",
                                 "target": 500.0, "window": "1h", "owner": "ops", **kw}
    return KpiBinding.model_validate(fields)


async def test_save_and_retrieve(kpi: KpiService, kpi_storage: Storage) -> None:
    saved = await kpi.save_kpi_binding("acme", binding("echo", "p99", description="tail"), actor="alice")
    assert saved == binding("echo", "p99", description="tail")
    assert await kpi.list_kpi_bindings("acme", "echo") == [saved]
    assert await kpi.get_kpi_binding("acme", "echo", "p99") == saved
    record = await kpi_storage.store.get("acme", "kpi_bindings", "echo:p99")
    assert record is not None and record.actor == "alice" and record.data == saved.model_dump(mode="json")


async def test_list_returns_only_that_tools_bindings(kpi: KpiService) -> None:
    for tool, kpi_id in [("echo", "p50"), ("echo", "p99"), ("echo_v2", "p50"), ("echoes", "calls"),
                         ("echo.x", "p95"), ("media", "err")]:
        await kpi.save_kpi_binding("acme", binding(tool, kpi_id))
    assert [(b.tool_name, b.kpi_id) for b in await kpi.list_kpi_bindings("acme", "echo")] == [
        ("echo", "p50"), ("echo", "p99")]
    assert [b.kpi_id for b in await kpi.list_kpi_bindings("acme", "echo_v2")] == ["p50"]
    assert await kpi.list_kpi_bindings("acme", "nothing") == []
    assert await kpi.list_kpi_bindings("globex", "echo") == []


async def test_list_pages_through_many_bindings(kpi: KpiService) -> None:
    for n in range(7):
        await kpi.save_kpi_binding("acme", binding("busy", f"k{n}"))
    assert len(await kpi.list_kpi_bindings("acme", "busy")) == 7


async def test_update_and_delete(kpi: KpiService) -> None:
    await kpi.save_kpi_binding("acme", binding("echo", "p99"), expected_version=0)
    with pytest.raises(Conflict):
        await kpi.save_kpi_binding("acme", binding("echo", "p99", target=1.0), expected_version=0)
    updated = await kpi.save_kpi_binding("acme", binding("echo", "p99", target=1.0), expected_version=1)
    assert (await kpi.list_kpi_bindings("acme", "echo")) == [updated]
    await kpi.delete_kpi_binding("acme", "echo", "p99")
    assert await kpi.list_kpi_bindings("acme", "echo") == []
    assert await kpi.get_kpi_binding("acme", "echo", "p99") is None
    with pytest.raises(NotFound):
        await kpi.delete_kpi_binding("acme", "echo", "p99")
    assert (await kpi.save_kpi_binding("acme", binding("echo", "p99"))).target == 500.0


async def test_bad_arguments(kpi: KpiService) -> None:
    with pytest.raises(ValidationFailed):
        await kpi.list_kpi_bindings("acme", "bad:tool")
    with pytest.raises(ValidationFailed):
        await kpi.save_kpi_binding("acme", {"tool_name": "echo"})  # type: ignore[arg-type]
