"""KPI fixtures: a KpiService on a real store, SQLite and PostgreSQL (skipped when none answers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from northstar.kpi import KpiService
from northstar.storage import Storage, open_store
from tests.pg import backend_url, require_backend


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def kpi_backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
async def kpi_storage(kpi_backend: str, tmp_path: Path) -> AsyncIterator[Storage]:
    async with backend_url(kpi_backend, tmp_path) as (url, _schema), open_store(url) as storage:
        yield storage


@pytest.fixture
def kpi(kpi_storage: Storage) -> KpiService:
    return KpiService(kpi_storage.store)
