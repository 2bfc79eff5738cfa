"""The versions each compat module was verified against, compared with what is installed."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata


def installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def mismatches(verified: Mapping[str, str], module: str) -> list[str]:
    """One message per distribution whose installed version is not the verified one."""
    problems = []
    for distribution, version in verified.items():
        found = installed(distribution)
        if found != version:
            problems.append(
                f"{distribution} {found or '(not installed)'} is installed, but {module} was verified against "
                f"{distribution} {version} only: run tests/compat against it, then update {module}.VERIFIED"
            )
    return problems


class IncompatibleLibrary(RuntimeError):
    """A library no longer has the internal a compat module relies on: it is not a verified version."""

    def __init__(self, what: str, module: str, verified: Mapping[str, str]) -> None:
        named = ", ".join(f"{dist} {version}" for dist, version in verified.items())
        super().__init__(f"{what}; {module} was verified against {named} only")
