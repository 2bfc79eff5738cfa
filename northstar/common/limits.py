"""Declared ranges for every number, name and bounded string a client can send, and their checks.

One place for the bounds the edges (the REST models and the OpenAPI document, the JSON-RPC
front door, stdio) and the layers behind them (the store's messages and core, the audit
query) all enforce, so that a value out of range is refused as ``ValidationFailed`` (400
``validation_error``) in the caller's task and never reaches a database driver or a shared
actor as an exception; names match the same patterns whether they arrive in a header, a
path, a query or a body.

    INT64_MIN .. INT64_MAX   what SQLite's INTEGER and PostgreSQL's BIGINT hold, and what
                             orjson can echo back: the widest integer anything may carry
    MAX_VERSION              a resource version (1, 2, 3 ...): PostgreSQL keeps it in an INT
                             (32 bits), so that is the range on every backend
    MAX_SEQ                  an audit sequence number or a change id (0 = "from the start"):
                             BIGINT / SQLite INTEGER

Parsing numbers from text (:func:`parse_int`) accepts ASCII digits only: ``str.isdigit`` and
``int()`` also take Unicode digits (``"²"``, ``"٣"``), whitespace, signs and underscores.
The checks are a few comparisons each: cheap enough for every request.
"""

from __future__ import annotations

import math
from typing import Any, Final

from northstar.common.errors import ValidationFailed

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
INT32_MAX: Final = 2**31 - 1
MAX_VERSION: Final = INT32_MAX
MAX_SEQ: Final = INT64_MAX
#: Digits in INT64_MAX: a longer string of digits is out of range without converting it.
_MAX_DIGITS: Final = len(str(INT64_MAX))

#: JSON-RPC ids the gateway echoes: integers within signed 64 bits, strings up to this length.
MAX_JSONRPC_ID_CHARS: Final = 256
#: A pagination cursor or ``after`` key sent back by a client.
MAX_CURSOR_CHARS: Final = 1024
#: Free-text filters (audit ``tool``, ``user``, ``decision``, ``tenant``).
MAX_FILTER_CHARS: Final = 512
MAX_INT64: Final = INT64_MAX
MAX_CURSOR_LEN: Final = 512

# -- time -----------------------------------------------------------------------------------------
# The longest tool timeout a caller may ask for; the gateway further refuses anything above its
# ``tool_timeout_max_s`` setting.
MAX_TOOL_TIMEOUT_S: Final = 3600.0

# -- names ----------------------------------------------------------------------------------------
MAX_NAME_LEN: Final = 128
TENANT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
USER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"
SCOPE_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,127}$"
FIREARM_PATTERN: Final = r"^firearm\.[a-z0-9][a-z0-9_.-]{0,126}$"
TOOL_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# A published package's version: MAJOR.MINOR.PATCH in ASCII digits.
PACKAGE_VERSION_PATTERN: Final = r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$"
KEY_ID_PATTERN: Final = r"^[0-9a-f]{16}$"

# -- free text ------------------------------------------------------------------------------------
MAX_REASON_LEN: Final = 1024
MAX_LABEL_LEN: Final = 200
MAX_TIMESTAMP_LEN: Final = 64


def is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON true/false are not numbers)."""
    return isinstance(value, int) and not isinstance(value, bool)


def in_int64(value: Any) -> bool:
    return is_int(value) and INT64_MIN <= value <= INT64_MAX


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` when it is an integer in ``[lo, hi]``, else ``ValidationFailed`` naming ``name``."""
    if not is_int(value) or not lo <= value <= hi:
        raise ValidationFailed(f"{name} must be an integer between {lo} and {hi}", field=name)
    return int(value)


def check_optional_int(name: str, value: Any, lo: int, hi: int) -> int | None:
    return None if value is None else check_int(name, value, lo, hi)


def parse_int(name: str, text: str, lo: int, hi: int) -> int:
    """The integer written in ``text`` (ASCII digits, an optional leading ``-``) within ``[lo, hi]``."""
    digits = text[1:] if text.startswith("-") else text
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_DIGITS:
        raise ValidationFailed(f"{name} must be an integer between {lo} and {hi}", field=name)
    return check_int(name, int(text), lo, hi)


def check_text(name: str, value: Any, max_chars: int, *, optional: bool = True) -> str | None:
    """``value`` when it is a string of at most ``max_chars`` characters (or None, if optional)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise ValidationFailed(f"{name} must be a string of at most {max_chars} characters", field=name)
    return value


def check_timeout(name: str, value: Any, maximum: float) -> float | None:
    """A caller's timeout in seconds: None, or a finite number with ``0 < value <= maximum``."""
    if value is None:
        return None
    number = is_int(value) or (isinstance(value, float) and math.isfinite(value))
    if not number or not 0 < value <= maximum:  # ints compared as ints: 10**400 is no float
        raise ValidationFailed(f"{name} must be a number of seconds, greater than 0 and at most {maximum:g}",
                               field=name, maximum=maximum)
    return float(value)
