"""One version everywhere: ``northstar/__init__.py`` is the only place it is written.

The package metadata takes it from there (``pyproject.toml``), and ``northstar --version``, a
real ``northstar serve``'s ``/health`` and its OpenAPI document all say the same.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx2

import northstar
from tests.harness import GatewayProcess, gateway_env

ROOT = Path(__file__).resolve().parents[2]


def cli_version(tmp_path: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "northstar", "--version"], env=gateway_env(tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    name, version = done.stdout.split()
    assert name == "northstar"
    return version


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "northstar.__version__"}
    # The installed metadata agrees (a stale install would not: `make install` re-runs when
    # northstar/__init__.py changes).
    assert importlib.metadata.version("northstar") == northstar.__version__


def test_version_flag_and_health_agree_on_a_real_serve(gateway: GatewayProcess, tmp_path: Path) -> None:
    version = cli_version(tmp_path)
    assert version == northstar.__version__
    health = httpx2.get(f"{gateway.url}/health", timeout=10).json()
    assert health["version"] == version
    document = httpx2.get(f"{gateway.url}/openapi.json", timeout=10).json()
    assert document["info"]["version"] == version
