"""Workbench tool definitions: the draft ``ToolSpec``, its validation, and the published tool.

A workbench tool never runs code of its own: each of its operations *wraps* a built-in
operation (``media_v2.create_asset``) and may only narrow it::

    {"schema_version": 1, "tool_id": "notes", "title": "Notes", "description": "...",
     "version": "1.0.0",                       # optional: the publisher picks the next patch
     "scopes": [{"name": "notes.write", "description": "...", "firearm": "firearm.notes.write",
                 "operations": [{"name": "add_note", "description": "...", "title": "Add note",
                                 "wraps": "media_v2.create_asset",
                                 "input": {"presets": {"mime_type": "text/plain"},
                                           "restrict": {"name": {"maxLength": 80}},
                                           "hide": ["content_base64"]},
                                 "annotations": {"idempotent": false}}]}],
     "kpis": [{"kpi_id": "p95", "metric": "latency_p95", ...}]}

:func:`validate_spec` checks a raw spec against the live catalogue and reports *every*
problem as ``{"path": <JSON pointer into the spec>, "message": ...}`` in
``InvalidDefinition.details["errors"]``, in one pass: a structural problem (a missing field,
a bad version string) does not hide the rules below for the parts that are sound on their
own (each scope, each operation, the tool id, the KPIs). The rules:

* ``wraps`` names an existing built-in operation (canonical dotted form);
* restrictions only narrow: ``maxLength``/``maximum``/``maxItems`` never above, and
  ``minLength``/``minimum`` never below, the wrapped field's own bound; ``enum`` and
  ``const`` values must each be valid for the wrapped field (so an enum is a subset);
  a ``pattern`` is added on top of any the field already has; restricting a field of the
  wrong type, or a field that is hidden or preset, is refused;
* ``hide`` and ``presets`` name existing fields; a required field may only disappear from
  the schema when a preset supplies it; every preset value must validate against the
  wrapped input model;
* annotations may claim less than the wrapped operation, never more safety: not
  ``read_only``/``idempotent`` unless the wrapped op is, never ``destructive: false`` or
  ``open_world: false`` when it is;
* when the live firearm bindings are given, a scope wrapping a firearm-guarded operation
  must itself name a firearm (no publishing an unguarded door to a guarded operation).

:func:`build_tool` turns a valid spec into a :class:`ToolDefinition` whose operations keep
the wrapped input/output models, show the narrowed JSON Schema (``input_schema_override``)
and run a handler that enforces it (see :func:`narrowed_handler`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from northstar.common.errors import InvalidDefinition, ValidationFailed, json_pointer
from northstar.mcp_gateway import schema_gen
from northstar.mcp_gateway.tools import naming
from northstar.mcp_gateway.tools.model import Annotations, Operation, Scope, ToolContext, ToolDefinition
from northstar.policy.firearms import FIREARM_NAME, SCOPE_NAME

SCHEMA_VERSION = 1
SEMVER = r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$"
WRAPS = r"^[a-z0-9][a-z0-9_-]*\.[a-z0-9][a-z0-9_-]*$"
MAX_TITLE = 200
MAX_DESCRIPTION = 4000
MAX_PATTERN = 500
DRAFT_VERSION = "0.0.0"  # the version a draft without one runs under in the sandbox

Problem = dict[str, str]
ToolId = Annotated[str, Field(min_length=1, max_length=60)]

# --------------------------------------------------------------------------- the spec model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Restriction(_Strict):
    """JSON-Schema keywords a field may be narrowed with (camelCase, as in JSON Schema)."""

    enum: list[Any] | None = Field(default=None, min_length=1, max_length=500)
    const: Any = None
    maxLength: int | None = Field(default=None, ge=0)
    minLength: int | None = Field(default=None, ge=0)
    maximum: int | float | None = None
    minimum: int | float | None = None
    pattern: str | None = Field(default=None, min_length=1, max_length=MAX_PATTERN)
    maxItems: int | None = Field(default=None, ge=0)

    def keywords(self) -> dict[str, Any]:
        """The keywords that were given (``const: null`` counts when written)."""
        out = {k: v for k, v in self.model_dump(exclude_none=True).items() if k != "const"}
        if "const" in self.model_fields_set:
            out["const"] = self.const
        return out


class InputSpec(_Strict):
    presets: dict[str, Any] = Field(default_factory=dict)
    restrict: dict[str, Restriction] = Field(default_factory=dict)
    hide: list[str] = Field(default_factory=list)


class AnnotationsSpec(_Strict):
    """Hints; ``None`` inherits the wrapped operation's value."""

    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


class OperationSpec(_Strict):
    name: str = Field(min_length=1, max_length=60)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    title: str | None = Field(default=None, min_length=1, max_length=MAX_TITLE)
    wraps: str = Field(pattern=WRAPS, max_length=130)
    input: InputSpec = Field(default_factory=InputSpec)
    annotations: AnnotationsSpec = Field(default_factory=AnnotationsSpec)


class ScopeSpec(_Strict):
    name: str = Field(pattern=SCOPE_NAME.pattern)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    firearm: str | None = Field(default=None, pattern=FIREARM_NAME.pattern)
    operations: list[OperationSpec] = Field(min_length=1, max_length=50)


class ToolSpec(_Strict):
    schema_version: Literal[1] = 1
    tool_id: ToolId
    title: str = Field(min_length=1, max_length=MAX_TITLE)
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION)
    version: str | None = Field(default=None, pattern=SEMVER)
    scopes: list[ScopeSpec] = Field(min_length=1, max_length=20)
    kpis: list[dict[str, Any]] = Field(default_factory=list, max_length=50)

    def operations(self) -> Iterator[tuple[int, int, ScopeSpec, OperationSpec]]:
        for i, scope in enumerate(self.scopes):
            for j, op in enumerate(scope.operations):
                yield i, j, scope, op

    def to_json(self) -> dict[str, Any]:
        """The spec as plain JSON (defaults filled in; ``const`` kept only when written)."""
        data = self.model_dump(mode="json", exclude={"scopes"})
        data["scopes"] = [_scope_json(s) for s in self.scopes]
        return data

    def firearm_bindings(self) -> dict[str, str | None]:
        return {s.name: s.firearm for s in self.scopes}


def _scope_json(scope: ScopeSpec) -> dict[str, Any]:
    data = scope.model_dump(mode="json", exclude={"operations"})
    data["operations"] = []
    for op in scope.operations:
        o = op.model_dump(mode="json", exclude={"input"})
        o["input"] = {
            "presets": op.input.presets,
            "restrict": {f: r.keywords() for f, r in op.input.restrict.items()},
            "hide": list(op.input.hide),
        }
        data["operations"].append(o)
    return data


# --------------------------------------------------------------------------- paths and errors


pointer = json_pointer


def invalid(errors: list[Problem], message: str = "invalid tool definition") -> InvalidDefinition:
    return InvalidDefinition(message, errors=errors)


def _pydantic_problems(exc: ValidationError, *prefix: object) -> list[Problem]:
    return [
        {"path": pointer(*prefix, *e["loc"]), "message": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


# --------------------------------------------------------------------------- validation


def parse_spec(raw: Any) -> ToolSpec:
    """The spec model, or InvalidDefinition with a JSON-pointer path per structural problem."""
    if not isinstance(raw, dict):
        raise invalid([{"path": "", "message": "the spec must be a JSON object"}])
    try:
        return ToolSpec.model_validate(raw)
    except ValidationError as exc:
        raise invalid(_pydantic_problems(exc)) from None


def validate_spec(raw: Any, catalog: Any, *, bindings: Mapping[str, str] | None = None) -> ToolSpec:
    """Check ``raw`` structurally and against the live ``catalog``; raise InvalidDefinition.

    Every problem in one answer: when the structure is wrong, the rules are still applied to
    every part that is structurally sound on its own (see :func:`_salvage`), at its own path.
    ``bindings`` (the live scope -> firearm map), when given, enables the rule that a scope
    wrapping a firearm-guarded operation must name a firearm itself.
    """
    if not isinstance(raw, dict):
        raise invalid([{"path": "", "message": "the spec must be a JSON object"}])
    try:
        spec = ToolSpec.model_validate(raw)
    except ValidationError as exc:
        raise invalid(_pydantic_problems(exc) + _check_parts(_salvage(raw), catalog, bindings)) from None
    problems = check_spec(spec, catalog, bindings)
    if problems:
        raise invalid(problems)
    return spec


@dataclass(frozen=True)
class _Parts:
    """The structurally sound parts of a spec, at their positions in it.

    ``scopes``: (index, the scope or None when the scope itself is unsound, its sound
    operations with their indices).
    """

    tool_id: str | None
    scopes: list[tuple[int, ScopeSpec | None, list[tuple[int, OperationSpec]]]]
    kpis: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def _parts(spec: ToolSpec) -> _Parts:
    scopes: list[tuple[int, ScopeSpec | None, list[tuple[int, OperationSpec]]]] = [
        (i, scope, list(enumerate(scope.operations))) for i, scope in enumerate(spec.scopes)
    ]
    return _Parts(spec.tool_id, scopes, list(enumerate(spec.kpis)))


def _valid(model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


_TOOL_ID = TypeAdapter(ToolId)


def _salvage(raw: dict[str, Any]) -> _Parts:
    """What of a spec that failed its structural check can still be checked against the rules."""
    try:
        tool_id: str | None = _TOOL_ID.validate_python(raw.get("tool_id"))
    except ValidationError:
        tool_id = None
    scopes: list[tuple[int, ScopeSpec | None, list[tuple[int, OperationSpec]]]] = []
    for i, raw_scope in enumerate(_list(raw.get("scopes"))):
        scope = _valid(ScopeSpec, raw_scope)
        if scope is not None:
            scopes.append((i, scope, list(enumerate(scope.operations))))
            continue
        raw_ops = _list(raw_scope.get("operations")) if isinstance(raw_scope, dict) else []
        ops = [(j, op) for j, op in ((j, _valid(OperationSpec, r)) for j, r in enumerate(raw_ops)) if op is not None]
        scopes.append((i, None, ops))
    kpis = [(k, kpi) for k, kpi in enumerate(_list(raw.get("kpis"))) if isinstance(kpi, dict)]
    return _Parts(tool_id, scopes, kpis)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def check_spec(spec: ToolSpec, catalog: Any, bindings: Mapping[str, str] | None = None) -> list[Problem]:
    """Every semantic problem of a structurally valid spec (empty when it is valid)."""
    return _check_parts(_parts(spec), catalog, bindings)


def _check_parts(parts: _Parts, catalog: Any, bindings: Mapping[str, str] | None) -> list[Problem]:
    problems = _check_names(parts)
    for i, scope, ops in parts.scopes:
        for j, op in ops:
            at = ("scopes", i, "operations", j)
            wrapped = _resolve_wrapped(catalog, op.wraps)
            if isinstance(wrapped, str):
                problems.append({"path": pointer(*at, "wraps"), "message": wrapped})
                continue
            problems += check_operation(op, wrapped.op, at)
            guard = (bindings or {}).get(wrapped.scope.name)
            if bindings is not None and guard and scope is not None and scope.firearm is None:
                problems.append({"path": pointer("scopes", i, "firearm"), "message":
                                 f"{op.wraps} is guarded by {guard}; this scope must name a firearm too"})
    problems += _check_kpis(parts)
    return problems


def _check_names(parts: _Parts) -> list[Problem]:
    problems: list[Problem] = []
    if parts.tool_id is not None:
        try:
            naming.check_part("tool id", parts.tool_id)
        except ValueError as exc:
            problems.append({"path": "/tool_id", "message": str(exc)})
    scopes: set[str] = set()
    ops: set[str] = set()
    for i, scope, scope_ops in parts.scopes:
        if scope is not None:
            if scope.name in scopes:
                problems.append({"path": pointer("scopes", i, "name"), "message": f"scope {scope.name!r} twice"})
            scopes.add(scope.name)
        for j, op in scope_ops:
            at = pointer("scopes", i, "operations", j, "name")
            if op.name in ops:
                problems.append({"path": at, "message": f"operation {op.name!r} appears twice"})
            ops.add(op.name)
            if parts.tool_id is None:
                continue
            try:
                naming.to_wire(f"{parts.tool_id}.{op.name}")
            except ValueError as exc:
                problems.append({"path": at, "message": str(exc)})
    return problems


def _resolve_wrapped(catalog: Any, wraps: str) -> Any:
    res = catalog.resolve(wraps)
    if res is None or res.canonical != wraps:
        return f"{wraps} is not an operation in the catalogue"
    if not res.tool.builtin:
        return f"{wraps} is not a built-in operation; only built-in operations can be wrapped"
    return res


def _check_kpis(parts: _Parts) -> list[Problem]:
    try:
        from northstar.kpi.models import KpiBinding
    except ImportError:  # the KPI package is optional for validation
        return []
    problems: list[Problem] = []
    tool_name = parts.tool_id or "tool"  # an unsound tool id is reported already; check the rest
    for k, raw in parts.kpis:
        if "tool_name" in raw:
            problems.append({"path": pointer("kpis", k, "tool_name"),
                             "message": "tool_name is implied by the tool; leave it out"})
            continue
        try:
            KpiBinding.model_validate({"owner": "publisher", **raw, "tool_name": tool_name})
        except ValidationError as exc:
            problems += _pydantic_problems(exc, "kpis", k)
    return problems


def check_operation(op: OperationSpec, wrapped: Operation, at: tuple[object, ...]) -> list[Problem]:
    """Problems of one operation against the operation it wraps."""
    schema = schema_gen.model_schema(wrapped.input_model)
    problems = _check_input(op.input, wrapped, schema, (*at, "input"))
    problems += _check_annotations(op.annotations, wrapped.annotations, (*at, "annotations"))
    return problems


def _check_input(spec: InputSpec, wrapped: Operation, schema: dict[str, Any], at: tuple[object, ...]) -> list[Problem]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    problems: list[Problem] = []
    for n, name in enumerate(spec.hide):
        if name not in props:
            problems.append({"path": pointer(*at, "hide", n), "message": f"{name!r} is not an input field"})
        elif name in required and name not in spec.presets:
            problems.append({"path": pointer(*at, "hide", n),
                             "message": f"{name!r} is required: hiding it needs a preset"})
    problems += _check_presets(spec.presets, wrapped, props, (*at, "presets"))
    removed = set(spec.hide) | set(spec.presets)
    defs = schema.get("$defs", {})
    for name, restriction in spec.restrict.items():
        where = (*at, "restrict", name)
        if name not in props:
            problems.append({"path": pointer(*where), "message": f"{name!r} is not an input field"})
        elif name in removed:
            problems.append({"path": pointer(*where), "message": f"{name!r} is hidden or preset"})
        else:
            problems += check_restriction(props[name], defs, restriction, where)
    return problems


def _check_presets(
    presets: dict[str, Any], wrapped: Operation, props: dict[str, Any], at: tuple[object, ...]
) -> list[Problem]:
    problems = [
        {"path": pointer(*at, name), "message": f"{name!r} is not an input field"}
        for name in presets
        if name not in props
    ]
    try:
        wrapped.input_model.model_validate(presets)
    except ValidationError as exc:
        for e in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = e["loc"]
            if loc and loc[0] in presets and loc[0] in props and e["type"] != "missing":
                problems.append({"path": pointer(*at, *loc), "message": e["msg"]})
    return problems


_UPPER = ("maxLength", "maximum", "maxItems")
_LOWER = ("minLength", "minimum")
_APPLIES = {
    "maxLength": {"string"}, "minLength": {"string"}, "pattern": {"string"},
    "maximum": {"integer", "number"}, "minimum": {"integer", "number"}, "maxItems": {"array"},
}


def _resolve(node: Any, defs: Mapping[str, Any]) -> Any:
    ref = node.get("$ref") if isinstance(node, dict) else None
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return defs.get(ref.removeprefix("#/$defs/"), {})
    return node


def _branches(field: dict[str, Any], defs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The field and, for a union, its alternatives ($refs resolved)."""
    node = _resolve(field, defs)
    out = [node]
    for key in ("anyOf", "oneOf", "allOf"):
        for alt in node.get(key, ()):
            out.extend(_branches(alt, defs))
    return out


def _found(field: dict[str, Any], defs: Mapping[str, Any], key: str) -> list[Any]:
    return [b[key] for b in _branches(field, defs) if key in b]


def _types(field: dict[str, Any], defs: Mapping[str, Any]) -> set[str] | None:
    """The JSON types the field admits; ``None`` when unconstrained."""
    found: set[str] = set()
    for b in _branches(field, defs):
        t = b.get("type")
        found.update([t] if isinstance(t, str) else (t or ()))
    return found or None


def check_restriction(
    field: dict[str, Any], defs: Mapping[str, Any], restriction: Restriction, at: tuple[object, ...]
) -> list[Problem]:
    """A restriction may only narrow ``field`` (the wrapped field's JSON Schema)."""
    problems: list[Problem] = []
    kw = restriction.keywords()
    types = _types(field, defs)
    for key, value in kw.items():
        where = pointer(*at, key)
        applies = _APPLIES.get(key)
        if applies and types is not None and not applies & types:
            problems.append({"path": where, "message": f"{key} does not apply to a field of type "
                                                       f"{'/'.join(sorted(types))}"})
        elif key in _UPPER:
            problems += _upper(field, defs, key, value, where)
        elif key in _LOWER:
            problems += _lower(field, defs, key, value, where)
        elif key == "pattern":
            problems += _pattern_problem(value, where)
        elif key in ("enum", "const"):
            problems += _values_problem(field, defs, key, value if key == "enum" else [value], at)
    problems += _consistency(field, defs, kw, at)
    return problems


def _upper(field: dict[str, Any], defs: Mapping[str, Any], key: str, value: Any, where: str) -> list[Problem]:
    bounds = _found(field, defs, key)
    if bounds and value > min(bounds):
        return [{"path": where, "message": f"{key} {value} would widen the wrapped field's {key} {min(bounds)}"}]
    excl = _found(field, defs, "exclusiveMaximum") if key == "maximum" else []
    if excl and value >= min(excl):
        return [{"path": where, "message": f"maximum {value} would widen the exclusive maximum {min(excl)}"}]
    return []


def _lower(field: dict[str, Any], defs: Mapping[str, Any], key: str, value: Any, where: str) -> list[Problem]:
    bounds = _found(field, defs, key)
    if bounds and value < max(bounds):
        return [{"path": where, "message": f"{key} {value} would widen the wrapped field's {key} {max(bounds)}"}]
    if key == "minimum":
        excl = _found(field, defs, "exclusiveMinimum")
        if excl and value <= max(excl):
            return [{"path": where, "message": f"minimum {value} would widen the exclusive minimum {max(excl)}"}]
    return []


def _pattern_problem(value: str, where: str) -> list[Problem]:
    try:
        re.compile(value)
    except re.error as exc:
        return [{"path": where, "message": f"pattern is not a valid regular expression: {exc}"}]
    return []


def _values_problem(
    field: dict[str, Any], defs: Mapping[str, Any], key: str, values: list[Any], at: tuple[object, ...]
) -> list[Problem]:
    import jsonschema  # imported when a draft is checked: keeps the stdio cold start short

    validator = jsonschema.Draft202012Validator({**field, "$defs": dict(defs)})
    problems = []
    for n, value in enumerate(values):
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = pointer(*at, key, n) if key == "enum" else pointer(*at, key)
            problems.append({"path": where, "message": f"{value!r} is not allowed by the wrapped field: "
                                                       f"{error.message}"})
    return problems


def _consistency(
    field: dict[str, Any], defs: Mapping[str, Any], kw: dict[str, Any], at: tuple[object, ...]
) -> list[Problem]:
    problems = []
    for lo_key, hi_key in (("minLength", "maxLength"), ("minimum", "maximum")):
        if lo_key not in kw and hi_key not in kw:
            continue
        lo = kw.get(lo_key, max(_found(field, defs, lo_key), default=None))
        hi = kw.get(hi_key, min(_found(field, defs, hi_key), default=None))
        if lo is not None and hi is not None and lo > hi:
            key = lo_key if lo_key in kw else hi_key
            problems.append({"path": pointer(*at, key), "message": f"{lo_key} {lo} exceeds {hi_key} {hi}"})
    return problems


# Claiming more safety than the wrapped operation has is refused, claiming less is fine.
_SAFER_WHEN_TRUE = ("read_only", "idempotent")
_SAFER_WHEN_FALSE = ("destructive", "open_world")


def _check_annotations(spec: AnnotationsSpec, wrapped: Annotations, at: tuple[object, ...]) -> list[Problem]:
    problems = []
    for name in _SAFER_WHEN_TRUE:
        if getattr(spec, name) is True and not getattr(wrapped, name):
            problems.append({"path": pointer(*at, name), "message": f"the wrapped operation is not {name}"})
    for name in _SAFER_WHEN_FALSE:
        if getattr(spec, name) is False and getattr(wrapped, name):
            problems.append({"path": pointer(*at, name), "message": f"the wrapped operation is {name}"})
    return problems


# --------------------------------------------------------------------------- building the tool


def narrowed_schema(wrapped: Operation, spec: InputSpec) -> dict[str, Any]:
    """The wrapped input schema with restrictions applied and hidden/preset fields removed."""
    schema = copy.deepcopy(schema_gen.model_schema(wrapped.input_model))
    props: dict[str, Any] = schema.setdefault("properties", {})
    removed = set(spec.hide) | set(spec.presets)
    for name in removed:
        props.pop(name, None)
    required = [r for r in schema.get("required", ()) if r not in removed]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    defs = schema.get("$defs", {})
    for name, restriction in spec.restrict.items():
        if name in props:
            props[name] = _narrow_field(props[name], defs, restriction.keywords())
    schema["additionalProperties"] = False
    return schema


def _narrow_field(field: dict[str, Any], defs: Mapping[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    out = dict(field)
    for key, value in kw.items():
        if key == "pattern" and _found(field, defs, "pattern"):
            out["allOf"] = [*out.get("allOf", ()), {"pattern": value}]  # both patterns must match
        else:
            out[key] = value
    return out


def effective_annotations(spec: AnnotationsSpec, wrapped: Annotations) -> Annotations:
    values = {k: getattr(wrapped, k) if getattr(spec, k) is None else getattr(spec, k)
              for k in ("read_only", "destructive", "idempotent", "open_world")}
    return Annotations(**values)


def _argument_problems(validator: Any, args: dict[str, Any]) -> list[dict[str, Any]]:
    errors = sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
    return [{"path": pointer(*e.absolute_path), "message": _message(e)} for e in errors]


def _message(error: Any) -> str:
    """A validation message that names the rule, never echoing the (possibly huge) value."""
    if error.validator in ("additionalProperties", "required"):
        return str(error.message)
    rule = json.dumps(error.validator_value, ensure_ascii=False, default=str)
    return f"does not satisfy {error.validator} {rule[:120]}"


def caller_arguments(inputs: Any) -> dict[str, Any]:
    """The arguments the caller set, as JSON (``inputs``: a model instance or a dict)."""
    if isinstance(inputs, BaseModel):
        dumped: dict[str, Any] = inputs.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return dumped
    if isinstance(inputs, dict):
        return dict(inputs)
    raise ValidationFailed("arguments must be a JSON object", field="arguments")


def narrowed_handler(wrapped: Operation, schema: dict[str, Any], presets: dict[str, Any]) -> Any:
    """A handler enforcing ``schema`` and ``presets`` before delegating to ``wrapped``.

    The handler carries its pure ``argument_check`` as an attribute: the operation exposes it
    so the gate chain's input gate refuses a violation (a deny) before anything is allowed;
    the handler runs it again as a second line.

    The gate chain hands it the wrapped input model, already validated with the presets
    merged in; the handler recovers what the caller set, refuses a preset the caller tried
    to change, validates the rest against the narrowed schema, merges the presets again,
    re-validates with the wrapped model and awaits the wrapped handler (same ToolContext).
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    preset_json = {k: _json_value(wrapped, k, v) for k, v in presets.items()}

    def argument_check(raw: dict[str, Any]) -> list[dict[str, Any]]:
        """Problems with the caller's own arguments: a changed preset, the narrowed schema."""
        args = dict(raw)
        errors = [{"path": pointer(k), "message": f"{k} is fixed by this tool"}
                  for k, v in preset_json.items() if k in args and args.pop(k) != v]
        for k in preset_json:
            args.pop(k, None)
        return errors + _argument_problems(validator, args)


    async def handler(tctx: ToolContext, inputs: Any) -> BaseModel:
        args = caller_arguments(inputs)
        errors = argument_check(args)
        for k in preset_json:
            args.pop(k, None)
        if errors:
            raise ValidationFailed("arguments do not match the input schema", errors=errors)
        try:
            validated = wrapped.input_model.model_validate({**presets, **args})
        except ValidationError as exc:
            raise ValidationFailed("arguments do not match the input schema",
                                   errors=_pydantic_problems(exc)) from None
        return await wrapped.handler(tctx, validated)

    handler.argument_check = argument_check  # type: ignore[attr-defined]
    return handler


def _json_value(wrapped: Operation, name: str, value: Any) -> Any:
    """A preset as the wrapped model dumps it (so comparing with caller arguments is exact)."""
    field = wrapped.input_model.model_fields.get(name)
    if field is None:
        return value
    adapter: TypeAdapter[Any] = TypeAdapter(field.rebuild_annotation())
    try:
        return adapter.dump_python(adapter.validate_python(value), mode="json")
    except ValidationError:
        return value


def build_operation(op: OperationSpec, wrapped: Operation) -> Operation:
    schema = narrowed_schema(wrapped, op.input)
    return Operation(
        name=op.name,
        description=op.description,
        input_model=wrapped.input_model,
        output_model=wrapped.output_model,
        handler=(handler := narrowed_handler(wrapped, schema, dict(op.input.presets))),
        argument_check=handler.argument_check,
        annotations=effective_annotations(op.annotations, wrapped.annotations),
        title=op.title,
        input_schema_override=schema,
        presets=dict(op.input.presets),
    )


def build_tool(spec: ToolSpec, catalog: Any, *, package_hash: str | None = None) -> ToolDefinition:
    """The runnable :class:`ToolDefinition` of a validated spec (``version``: the spec's)."""
    scopes = []
    for i, scope in enumerate(spec.scopes):
        ops = []
        for j, op in enumerate(scope.operations):
            wrapped = _resolve_wrapped(catalog, op.wraps)
            if isinstance(wrapped, str):
                raise invalid([{"path": pointer("scopes", i, "operations", j, "wraps"), "message": wrapped}])
            ops.append(build_operation(op, wrapped.op))
        scopes.append(Scope(name=scope.name, description=scope.description, operations=tuple(ops)))
    return ToolDefinition(
        tool_id=spec.tool_id,
        title=spec.title,
        description=spec.description,
        version=spec.version or DRAFT_VERSION,
        scopes=tuple(scopes),
        builtin=False,
        package_hash=package_hash,
    )


def tool_schemas(tool: ToolDefinition) -> dict[str, dict[str, Any]]:
    """``{canonical op name: {"inputSchema", "outputSchema"}}`` as shown to clients."""
    return {
        schema_gen.canonical_name(tool, op): {
            "inputSchema": schema_gen.input_schema(op),
            "outputSchema": schema_gen.output_schema(op.output_model),
        }
        for _scope, op in tool.operations()
    }
