"""What the code imports is what ``pyproject.toml`` declares: no undeclared runtime import, no
declared runtime dependency that nothing imports.

Every absolute import under ``northstar/`` and ``actors/`` (wherever it sits: at the top of a
module, inside a function, under ``TYPE_CHECKING``) is mapped from its top-level name to the
distribution that provides it (``importlib.metadata.packages_distributions()``, so ``jwt`` is
PyJWT and ``quart_trio`` is quart-trio). A third-party name that maps to no declared runtime
dependency fails, naming the files that import it: a clean install (``pip install .``) would
not have it, however the development environment came by it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"northstar", "actors"}


def normalize(name: str) -> str:
    """PEP 503: ``Quart_Trio`` and ``quart-trio`` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalize(re.split(r"[\s<>=!~;\[(]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def imported_names() -> dict[str, set[str]]:
    """Top-level name -> the files importing it (absolute imports, first party and stdlib left out)."""
    found: dict[str, set[str]] = {}
    for package in sorted(FIRST_PARTY):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".", 1)[0]
                    if top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_runtime_dependency() -> None:
    providers = importlib.metadata.packages_distributions()
    runtime = declared()
    problems = []
    for name, files in sorted(imported_names().items()):
        dists = {normalize(d) for d in providers.get(name, [])}
        if not dists:
            problems.append(f"{name}: no installed distribution provides it (imported by {sorted(files)})")
        elif not dists & runtime:
            problems.append(f"{name} (from {sorted(dists)}) is not in [project].dependencies; "
                            f"imported by {sorted(files)}")
    assert not problems, "\n".join(problems)


def test_every_declared_runtime_dependency_is_imported() -> None:
    """A declared dependency nothing imports is dead weight on every install (pydantic-settings was)."""
    providers = importlib.metadata.packages_distributions()
    used = {normalize(d) for name in imported_names() for d in providers.get(name, [])}
    assert declared() - used == set()


def test_the_scan_sees_imports_wherever_they_are() -> None:
    """The scan is not blind: names imported only inside functions or TYPE_CHECKING blocks count."""
    found = imported_names()
    assert "northstar/policy/oauth.py" in found["httpx2"]  # imported inside a function
    assert {"trio", "pydantic", "quart", "jwt"} <= set(found)
