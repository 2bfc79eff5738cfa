"""The workbench REST blueprint on the real REST app (Quart-Trio test client, real runtime)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from northstar.mcp_gateway.transports.rest import workbench as workbench_rest
from northstar.mcp_gateway.transports.rest.app import build_rest_app
from tests.workbench.workbench_kit import admin_headers, notes_spec, running

ADMIN: dict[str, str] = {}  # filled by the fixture: an admin key (no header makes an admin)
ALICE = {"X-Tenant-Id": "acme", "X-User-Id": "alice"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Any]:
    async with running(tmp_path) as services:
        ADMIN.clear()
        ADMIN.update(await admin_headers(services))
        app = build_rest_app(services)
        if "workbench" not in app.blueprints:
            app.register_blueprint(workbench_rest.bp)
        yield app.test_client()


async def test_draft_put_answers_422_with_the_offending_path(client: Any) -> None:
    spec = notes_spec()
    spec["scopes"][0]["operations"][0]["input"]["restrict"]["name"] = {"maxLength": 1000}
    response = await client.put("/v1/drafts/notes", json={"spec": spec}, headers=ALICE)
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == "invalid_definition"
    assert error["details"]["errors"][0]["path"] == "/scopes/0/operations/0/input/restrict/name/maxLength"


async def test_sandbox_publish_registry_overlays_rollback_and_kpis(client: Any) -> None:
    response = await client.put("/v1/drafts/notes", json={"spec": notes_spec()}, headers=ALICE)
    assert response.status_code == 201

    run = {"tool": "notes.add_note", "arguments": {"name": "a", "content_text": "b"}, "draft_id": "notes"}
    response = await client.post("/v1/sandbox/run", json=run, headers=ALICE)
    body = await response.get_json()
    assert response.status_code == 200  # a denial is still a sandbox result
    assert body["ok"] is False and body["sandbox"] is True and body["error"]["code"] == "firearm_required"
    run["mock_policy"] = {"grants": ["firearm.notes.write"]}
    body = await (await client.post("/v1/sandbox/run", json=run, headers=ALICE)).get_json()
    assert body["ok"] is True and body["output"]["mime_type"] == "text/plain"

    response = await client.post("/v1/drafts/notes/publish", json={"version": 1}, headers=ALICE)
    assert response.status_code == 403 and (await response.get_json())["error"]["code"] == "admin_required"
    response = await client.post("/v1/drafts/notes/publish", json={"version": 1}, headers=ADMIN)
    assert response.status_code == 201
    published = await response.get_json()
    assert published["package"]["id"] == "notes@1.0.0"
    assert published["overlay"]["package_hash"] == published["package"]["content_hash"]

    listing = await (await client.get("/v1/registry/packages/notes", headers=ALICE)).get_json()
    assert [p["version"] for p in listing["packages"]] == ["1.0.0"]
    one = await client.get("/v1/registry/packages/notes/1.0.0", headers=ALICE)
    assert (await one.get_json())["content_hash"] == published["package"]["content_hash"]
    assert (await client.get("/v1/registry/packages/notes/2.0.0", headers=ALICE)).status_code == 404
    assert (await one.get_json())["source"]["tenant"] == "acme"  # the publishing tenant sees its source
    stranger = {"X-Tenant-Id": "globex", "X-User-Id": "bob"}
    seen = await (await client.get("/v1/registry/packages/notes/1.0.0", headers=stranger)).get_json()
    assert "source" not in seen and "published_by" not in seen and seen["content_hash"]
    seen = await (await client.get("/v1/overlays/notes", headers=stranger)).get_json()
    assert "published_by" not in seen["current"]

    await client.put("/v1/drafts/notes", json={"spec": notes_spec(description="v2")}, headers=ALICE)
    response = await client.post("/v1/drafts/notes/publish", json={"version": 2}, headers=ADMIN)
    assert (await response.get_json())["package"]["version"] == "1.0.1"
    response = await client.post("/v1/overlays/notes/rollback", json={"version": "1.0.0"}, headers=ADMIN)
    assert response.status_code == 200
    overlays = await (await client.get("/v1/overlays/notes", headers=ALICE)).get_json()
    assert overlays["current"]["package_version"] == "1.0.0" and len(overlays["history"]) == 3

    tools = await (await client.get("/v1/tools", headers=ALICE)).get_json()
    notes = next(t for t in tools["tools"] if t["tool_id"] == "notes")
    assert notes["version"] == "1.0.0" and notes["package_hash"] == published["package"]["content_hash"]

    response = await client.post("/v1/tools/notes.list_notes/call", json={"arguments": {}}, headers=ALICE)
    assert response.status_code == 200
    status = await (await client.get("/v1/kpi/status/notes", headers=ALICE)).get_json()
    [kpi] = status["kpis"]
    assert kpi["kpi_id"] == "p95" and kpi["status"] == "ok" and kpi["samples"] == 1
    assert (await client.get("/metrics", headers=ALICE)).status_code == 403
    metrics = await (await client.get("/metrics", headers=ADMIN)).get_data(as_text=True)
    calls = {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(metrics)
             for s in family.samples if s.name == "northstar_tool_calls_total"}
    assert calls[(("door", "http"), ("operation", "list_notes"), ("outcome", "ok"), ("tool", "notes"))] == 1

    assert (await client.delete("/v1/overlays/notes", headers=ALICE)).status_code == 403
    assert (await client.delete("/v1/overlays/notes", headers=ADMIN)).status_code == 200
    response = await client.post("/v1/tools/notes.list_notes/call", json={"arguments": {}}, headers=ALICE)
    assert response.status_code == 404


async def test_sandbox_request_validation(client: Any) -> None:
    for body in ({}, {"tool": 5}, {"tool": "echo.ping", "arguments": []}, {"tool": "echo.ping", "mock_policy": 1},
                 {"tool": "echo.ping", "draft_id": "d", "draft_version": 0}):
        response = await client.post("/v1/sandbox/run", json=body, headers=ALICE)
        assert response.status_code == 400, body
