"""Shared fixtures: a real gateway process per test module, and PostgreSQL detection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import GatewayProcess


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway on a free loopback port with a fresh SQLite data directory."""
    data: Path = tmp_path_factory.mktemp("gw")
    with GatewayProcess(data) as gw:
        yield gw
