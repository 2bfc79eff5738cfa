"""Publish-time lint of a draft spec: every text a model will read, by the rules of
:mod:`northstar.common.text_lint`.

Tool titles and descriptions, and the enum/const/pattern strings of narrowed schemas, are
shown to the model verbatim; :func:`lint_spec` walks them and reports each problem as
``{"path": <JSON pointer into the spec>, "message": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from northstar.common.text_lint import Problem, lint_text
from northstar.workbench.definition import pointer


def _texts(spec: Any) -> Iterator[tuple[str, str]]:
    yield "/title", spec.title
    yield "/description", spec.description
    for i, scope in enumerate(spec.scopes):
        yield pointer("scopes", i, "description"), scope.description
        for j, op in enumerate(scope.operations):
            at = ("scopes", i, "operations", j)
            if op.title is not None:
                yield pointer(*at, "title"), op.title
            yield pointer(*at, "description"), op.description
            for field, restriction in op.input.restrict.items():
                yield from _strings(restriction.keywords(), (*at, "input", "restrict", field))
    for k, kpi in enumerate(spec.kpis):
        yield from _strings(kpi, ("kpis", k))


def _strings(value: Any, at: tuple[object, ...]) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield pointer(*at), value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*at, key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _strings(item, (*at, n))


def lint_spec(spec: Any) -> list[Problem]:
    """Lint every title, description and schema string of a ``ToolSpec``."""
    problems: list[Problem] = []
    for path, text in _texts(spec):
        problems += lint_text(path, text)
    return problems


def lint_upstream(spec: Any) -> list[Problem]:
    """The same lint over every text of the upstream tool definitions a spec wraps (their
    descriptions, titles and every schema string: tool poisoning hides there too)."""
    from northstar.upstreams.draft import parse_wraps
    from northstar.upstreams.pins import lint_tools, make_tool

    block = spec.upstream
    if block is None:
        return []
    used = {p[1] for _i, _j, _s, op in spec.operations() if (p := parse_wraps(op.wraps)) is not None}
    tools = {name: make_tool(block.definitions[name]) for name in sorted(used) if name in block.definitions}
    return [{**p, "path": "/upstream/definitions/" + p["path"].removeprefix("/tools/")} for p in lint_tools(tools)]
