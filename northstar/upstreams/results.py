"""What an upstream answered, made safe to hand on (pure).

A ``tools/call`` result passes through faithfully (text, images, audio, embedded resources,
resource links, ``structuredContent``, ``isError``, ``_meta``), with three checks first:

* size: the result's JSON may not exceed the upstream's ``max_result_bytes``;
* output schema: when the tool declares an ``outputSchema`` and the result is not an error,
  ``structuredContent`` must be present and valid (JSON Schema, references resolved inside
  the schema only: nothing is fetched);
* secrets: every string is scrubbed of the upstream's secret values.

A JSON-RPC error from the upstream becomes ``upstream_error`` carrying the upstream's own
message (scrubbed, at most 2000 characters) and its code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from northstar.common.errors import UpstreamFailed
from northstar.upstreams.secrets import Redactor

MAX_ERROR_TEXT = 2000


def bounded(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def upstream_error(upstream: str, message: str, redactor: Redactor, **details: Any) -> UpstreamFailed:
    """``upstream_error`` with the upstream's text, scrubbed and bounded."""
    text = bounded(redactor.scrub(message)) or "the upstream failed without a message"
    return UpstreamFailed(f"upstream {upstream}: {text}", upstream=upstream, **details)


def output_validator(schema: dict[str, Any]) -> Any:
    """A compiled validator for an output schema; ``ValueError`` when the schema is invalid."""
    import jsonschema
    from referencing import Registry

    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"the tool's output schema is not valid JSON Schema: {exc.message}") from None
    return cls(schema, registry=Registry())


def fast_check(schema: dict[str, Any], *, regex: bool = True) -> Callable[[Any], bool] | None:
    """A compiled yes/no check of a JSON value against ``schema`` (``jsonschema_rs``, ~100x faster
    than ``jsonschema`` on a tool's schema), or None where it cannot be built.

    It only ever says "valid" faster: a value it finds invalid, or one it cannot judge (a value
    outside JSON's number range, say), is judged again by the reference validator
    (:func:`output_validator`), whose verdict and message stand. It never fetches a ``$ref``
    (offline) and, like the reference, treats ``format`` as an annotation.

    ``regex=False`` (the input gate, where a wrong "valid" would let a narrowed argument through):
    no fast check for a schema with ``pattern`` or ``patternProperties``, whose regular
    expressions the two validators read in different dialects (Python's ``re`` against Rust's
    ``regex``); every other keyword means the same in both (both pass the JSON Schema suite).
    """
    if not regex and _mentions(schema, ("pattern", "patternProperties")):
        return None
    try:
        import jsonschema_rs

        validator = jsonschema_rs.validator_for(schema, offline=True, validate_formats=False)
    except Exception:  # a schema it will not take (the reference decides alone)
        return None

    def check(value: Any) -> bool:
        try:
            return bool(validator.is_valid(value))
        except Exception:
            return False

    return check


def _mentions(value: Any, keys: tuple[str, ...]) -> bool:
    if isinstance(value, dict):
        return any(k in keys for k in value) or any(_mentions(v, keys) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, keys) for v in value)
    return False


def schema_problem(validator: Any, value: Any, fast: Callable[[Any], bool] | None = None) -> str | None:
    """The first problem of ``value`` under ``validator``, naming the rule and the path only."""
    import jsonschema
    from referencing.exceptions import Unresolvable

    if fast is not None and fast(value):
        return None
    try:
        if validator.is_valid(value):  # the common case: no error to rank
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except Unresolvable:
        return "the output schema has a reference that does not resolve"
    if error is None:
        return None
    path = "".join(f"/{p}" for p in error.absolute_path) or "/"
    return f"at {path}: does not satisfy {error.validator}"


def check_result(upstream: str, tool: str, wire: dict[str, Any], *, max_bytes: int, validator: Any | None,
                 redactor: Redactor, fast: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """The result to hand on, or ``UpstreamFailed`` (too large, not matching its output schema)."""
    try:
        size = len(orjson.dumps(wire))  # compact UTF-8, as json.dumps(ensure_ascii=False) writes it
    except TypeError:  # what orjson refuses and JSON allows (integers past 64 bits)
        size = len(json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise UpstreamFailed(f"upstream {upstream}: {tool} answered {size} bytes, more than the "
                             f"{max_bytes} allowed", upstream=upstream, tool=tool, limit=max_bytes)
    if validator is not None and not wire.get("isError"):
        if "structuredContent" not in wire:
            raise UpstreamFailed(f"upstream {upstream}: {tool} declares an output schema but returned no "
                                 "structured content", upstream=upstream, tool=tool)
        problem = schema_problem(validator, wire["structuredContent"], fast)
        if problem is not None:
            raise UpstreamFailed(f"upstream {upstream}: {tool} returned structured content that does not match "
                                 f"its output schema ({problem})", upstream=upstream, tool=tool)
    scrubbed: dict[str, Any] = redactor.scrub_json(wire)
    return scrubbed
