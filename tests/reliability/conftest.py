"""Fixtures of the reliability suite: one shared gateway (defaults, diagnostics on) for the
cases that do not change limits, and an HTTP client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.harness import GatewayProcess
from tests.reliability.kit import started, traceback_free


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with default limits shared by the suite; must end without a traceback."""
    with started(tmp_path_factory.mktemp("rgw")) as gw:
        yield gw
    traceback_free(gw)


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client
