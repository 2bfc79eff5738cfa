"""Arguments checked against a JSON Schema, as the input gate reports them: every problem with its
JSON pointer and a message that names the rule, never echoing the (possibly huge) value.

Shared by the workbench's own operations (``definition.py``) and the operations that wrap an
upstream tool (``upstream_ops.py``).
"""

from __future__ import annotations

import json
from typing import Any

from northstar.common.errors import json_pointer


def argument_problems(validator: Any, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Every problem ``validator`` (a ``jsonschema`` validator) finds in ``args``, in path order."""
    errors = sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
    return [{"path": json_pointer(*e.absolute_path), "message": message(e)} for e in errors]


def message(error: Any) -> str:
    """A validation message that names the rule, never echoing the (possibly huge) value."""
    if error.validator in ("additionalProperties", "required"):
        return str(error.message)
    rule = json.dumps(error.validator_value, ensure_ascii=False, default=str)
    return f"does not satisfy {error.validator} {rule[:120]}"
