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
from northstar.common.limits import MAX_SEQ, MAX_VERSION, check_int, check_text, is_int

MAX_TENANT_LEN = 128
MAX_KIND_LEN = 64
MAX_RESOURCE_ID_LEN = 512
MAX_ACTOR_LEN = 512
MAX_LIST_LIMIT = 1000
MAX_CHANGES_LIMIT = 10_000
#: ``limit`` arguments beyond this are refused, not just capped (they are ints, not sizes).
MAX_LIMIT_ARG = MAX_SEQ

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
    invalid = ValidationFailed(
        "timestamp is not ISO-8601", errors=[{"loc": ["ts"], "msg": f"not ISO-8601: {str(text)[:64]!r}"}]
    )
    if not isinstance(text, str) or len(text) > 64:
        raise invalid
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return format_ts(moment)
    except (TypeError, ValueError, OverflowError):  # year 1 at +01:00 is before year 1 in UTC
        raise invalid from None


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
    """A page size: an integer >= 1 (and within 64 bits), capped at ``maximum``."""
    if not is_int(limit) or not 1 <= limit <= MAX_LIMIT_ARG:
        raise ValidationFailed(f"limit must be an integer between 1 and {MAX_LIMIT_ARG}",
                               errors=[{"loc": ["limit"]}])
    return min(limit, maximum)


def check_version(version: int | None) -> None:
    """A version to read: None (the latest) or 1 .. MAX_VERSION."""
    if version is not None:
        check_int("version", version, 1, MAX_VERSION)


def check_change_id(change_id: int) -> int:
    return check_int("change_id", change_id, 0, MAX_SEQ)


def check_page(prefix: str | None, after: str | None) -> None:
    """The string arguments of a list call: bounded like resource ids."""
    check_text("prefix", prefix, MAX_RESOURCE_ID_LEN)
    check_text("after", after, MAX_RESOURCE_ID_LEN)


def check_actor(actor: str | None) -> None:
    check_text("actor", actor, MAX_ACTOR_LEN)


def check_kinds(kinds: Any) -> None:
    """None (every kind) or a sequence of kind names."""
    if kinds is None:
        return
    if isinstance(kinds, str) or not all(isinstance(k, str) and _KIND_RE.match(k) for k in kinds):
        raise ValidationFailed("kinds must be a list of kind names", errors=[{"loc": ["kinds"]}])


# -- the arguments of each store operation (the backends and the store's messages check these) --
def check_save_args(tenant: str, kind: str, resource_id: str, expected_version: int | None,
                    actor: str | None) -> None:
    check_key(tenant, kind, resource_id)
    check_expected(expected_version)
    check_actor(actor)


def check_get_args(tenant: str, kind: str, resource_id: str, version: int | None) -> None:
    check_key(tenant, kind, resource_id)
    check_version(version)


def check_list_args(tenant: str, kind: str, prefix: str | None, after: str | None, limit: int) -> int:
    """The page size to use (``limit`` capped at :data:`MAX_LIST_LIMIT`)."""
    check_key(tenant, kind)
    check_page(prefix, after)
    return check_limit(limit, MAX_LIST_LIMIT)


def check_changes_args(change_id: int, kinds: Any, limit: int) -> int:
    """The page size to use (``limit`` capped at :data:`MAX_CHANGES_LIMIT`)."""
    check_change_id(change_id)
    check_kinds(kinds)
    return check_limit(limit, MAX_CHANGES_LIMIT)


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
    if not is_int(expected_version) or not 0 <= expected_version <= MAX_VERSION:
        raise ValidationFailed(
            f"expected_version must be None or an integer between 0 and {MAX_VERSION}",
            errors=[{"loc": ["expected_version"]}],
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
