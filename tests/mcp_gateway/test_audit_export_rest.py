"""``GET /v1/audit/export`` when the store fails (REST app on a real runtime, Quart-Trio test client).

A store that is down before the export begins is a plain 503 envelope (no stream). One that
fails part-way cannot change the 200 already sent: the stream then ends with one error envelope
line naming the last ``seq`` sent, so a consumer knows it was cut short and where to resume
(besides the ``X-Audit-Through-Seq`` header it was not reached).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from northstar.common.config import Settings
from northstar.common.errors import StoreUnavailable
from northstar.mcp_gateway.transports.rest.app import build_rest_app
from northstar.runtime import Runtime
from northstar.storage.audit_export import EXPORT_PAGE


class FailingAudit:
    """The real audit log, but its reads fail from the ``fail_from``-th query on (or ``head_seq``)."""

    def __init__(self, real: Any, *, fail_from: int | None = None, head_fails: bool = False) -> None:
        self.real, self.fail_from, self.head_fails, self.queries = real, fail_from, head_fails, 0

    async def head_seq(self) -> int:
        if self.head_fails:
            raise StoreUnavailable("the store is down", retry_after=1)
        return int(await self.real.head_seq())

    async def query(self, **kwargs: Any) -> Any:
        self.queries += 1
        if self.fail_from is not None and self.queries >= self.fail_from:
            raise StoreUnavailable("the store went away", retry_after=1)
        return await self.real.query(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
async def app_and_key(tmp_path: Path) -> AsyncIterator[tuple[Any, str, Any]]:
    settings = Settings.from_values({"data_dir": tmp_path, "log_level": "WARNING", "auth_mode": "api_key"})
    async with Runtime(settings).running() as services:
        key, _ = await services.keys.create("acme", "root", admin=True, provenance="cli")
        async with trio.open_nursery() as nursery:
            for i in range(EXPORT_PAGE + 500):
                nursery.start_soon(services.audit.append, {"event": "call", "tenant": "acme", "i": i})
        yield build_rest_app(services), key, services


async def get_export(app: Any, key: str) -> tuple[int, Any, bytes]:
    resp = await app.test_client().get("/v1/audit/export", headers={"Authorization": f"Bearer {key}"})
    return resp.status_code, resp.headers, await resp.get_data()


async def test_a_store_down_at_the_start_is_a_503_envelope(app_and_key: tuple[Any, str, Any]) -> None:
    _, key, services = app_and_key
    failing = build_rest_app(dataclasses.replace(services, audit=FailingAudit(services.audit, head_fails=True)))
    status, headers, body = await get_export(failing, key)
    assert status == 503 and headers["Retry-After"] == "1"
    assert json.loads(body)["error"]["code"] == "store_unavailable"


async def test_a_store_failing_midway_ends_the_stream_with_an_error_line(app_and_key: tuple[Any, str, Any]) -> None:
    _, key, services = app_and_key
    failing = build_rest_app(dataclasses.replace(services, audit=FailingAudit(services.audit, fail_from=2)))
    status, headers, body = await get_export(failing, key)
    assert status == 200
    lines = [json.loads(line) for line in body.splitlines()]
    through = int(headers["X-Audit-Through-Seq"])
    assert through > EXPORT_PAGE
    assert [line["seq"] for line in lines[:-1]] == list(range(1, EXPORT_PAGE + 1))  # the first page, whole
    error = lines[-1]["error"]
    assert (error["code"], error["http_status"], error["details"]["last_seq"]) == ("store_unavailable", 503,
                                                                                   EXPORT_PAGE)
    assert error["request_id"] == headers["X-Request-Id"]


async def test_without_a_failure_the_stream_reaches_the_through_seq(app_and_key: tuple[Any, str, Any]) -> None:
    app, key, _ = app_and_key
    status, headers, body = await get_export(app, key)
    lines = [json.loads(line) for line in body.splitlines()]
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    assert [line["seq"] for line in lines] == list(range(1, int(headers["X-Audit-Through-Seq"]) + 1))
