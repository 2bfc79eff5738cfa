"""The pure core of the versioned store: argument checks, version transitions, encodings, time.

Sync, no I/O: both backends call these, and the unit tests exercise them directly.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from northstar.common.errors import Conflict, ValidationFailed

MAX_TENANT_LEN = 128
MAX_KIND_LEN = 64
MAX_RESOURCE_ID_LEN = 512
MAX_LIST_LIMIT = 1000
MAX_CHANGES_LIMIT = 10_000

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def canonical_json(obj: Any) -> str:
    """The one JSON form hashed and stored: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def utc_now_iso() -> str:
    """Now, in the fixed-width UTC form every stored timestamp uses (sorts as text)."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def normalize_ts(text: str) -> str:
    """Parse any ISO-8601 timestamp (naive means UTC) into the stored fixed-width form."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValidationFailed(
            "timestamp is not ISO-8601", errors=[{"loc": ["ts"], "msg": f"not ISO-8601: {text!r}"}]
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_ts(moment)


def _check_name(field: str, value: object, max_len: int) -> None:
    if not isinstance(value, str) or not value or len(value) > max_len or "\x00" in value:
        raise ValidationFailed(
            f"{field} must be a non-empty string of at most {max_len} characters",
            errors=[{"loc": [field], "msg": "invalid"}],
        )


def check_key(tenant: str, kind: str, resource_id: str | None = None) -> None:
    """Validate the coordinates of a resource (``resource_id`` optional for list calls)."""
    _check_name("tenant", tenant, MAX_TENANT_LEN)
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ValidationFailed("kind must match ^[a-z][a-z0-9_]{0,63}$", errors=[{"loc": ["kind"]}])
    if resource_id is not None:
        _check_name("resource_id", resource_id, MAX_RESOURCE_ID_LEN)


def check_limit(limit: int, maximum: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValidationFailed("limit must be a positive integer", errors=[{"loc": ["limit"]}])
    return min(limit, maximum)


def encode_data(data: dict[str, Any] | None) -> str | None:
    """Canonical JSON text of a record's data (``None`` stays ``None``: a tombstone)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValidationFailed("data must be a JSON object or None", errors=[{"loc": ["data"]}])
    try:
        text = canonical_json(data)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ValidationFailed(
            "data is not JSON-serialisable", errors=[{"loc": ["data"], "msg": str(exc)}]
        ) from None
    return text


def decode_data(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):  # only a tampered row could hold this
        raise TypeError("stored data is not a JSON object")
    return value


def check_expected(expected_version: int | None) -> None:
    if expected_version is None:
        return
    if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
        raise ValidationFailed(
            "expected_version must be None or an integer >= 0", errors=[{"loc": ["expected_version"]}]
        )


def next_version(current: int, expected: int | None) -> int:
    """The version a save creates, given the current one (0: none yet) and the caller's expectation."""
    if expected is not None and expected != current:
        raise conflict(current, expected)
    return current + 1


def conflict(current: int, expected: int | None) -> Conflict:
    return Conflict(f"expected version {expected}, current version is {current}", current_version=current)


def backoff_delays(attempts: int, base: float = 0.005, cap: float = 0.2,
                   rng: random.Random | None = None) -> Iterator[float]:
    """Full-jitter exponential backoff: ``attempts - 1`` sleeps between ``attempts`` tries."""
    rand = rng or random.Random()
    for attempt in range(attempts - 1):
        yield rand.uniform(0, min(cap, base * (2**attempt)))


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step of a backend: applied once, in ``version`` order, recorded when done."""

    version: int
    name: str
    statements: tuple[str, ...]
