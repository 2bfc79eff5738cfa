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
from typing import Any

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


def schema_problem(validator: Any, value: Any) -> str | None:
    """The first problem of ``value`` under ``validator``, naming the rule and the path only."""
    import jsonschema
    from referencing.exceptions import Unresolvable

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
                 redactor: Redactor) -> dict[str, Any]:
    """The result to hand on, or ``UpstreamFailed`` (too large, not matching its output schema)."""
    size = len(json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise UpstreamFailed(f"upstream {upstream}: {tool} answered {size} bytes, more than the "
                             f"{max_bytes} allowed", upstream=upstream, tool=tool, limit=max_bytes)
    if validator is not None and not wire.get("isError"):
        if "structuredContent" not in wire:
            raise UpstreamFailed(f"upstream {upstream}: {tool} declares an output schema but returned no "
                                 "structured content", upstream=upstream, tool=tool)
        problem = schema_problem(validator, wire["structuredContent"])
        if problem is not None:
            raise UpstreamFailed(f"upstream {upstream}: {tool} returned structured content that does not match "
                                 f"its output schema ({problem})", upstream=upstream, tool=tool)
    scrubbed: dict[str, Any] = redactor.scrub_json(wire)
    return scrubbed
