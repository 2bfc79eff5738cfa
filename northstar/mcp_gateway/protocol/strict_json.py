"""Strict JSON: RFC 8259 only (UTF-8, no NaN or Infinity, no duplicate keys) within shape limits.

Pure functions with no I/O: the HTTP front door, the stdio door and the REST app all parse
request bodies through here, so every door refuses the same inputs the same way."""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

import orjson

from northstar.common import errors as E

MAX_JSON_DEPTH = 64


MAX_JSON_ITEMS = 100_000


FAST_PARSE_BYTES = 16 * 1024  # smaller ones may take the orjson path (fast_strict_json)


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key[:64])
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 would become inf, then null on the way out
        raise ValueError("number out of range")
    return value


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"[]{},")


class JsonTooComplex(Exception):
    pass


def check_json_shape(body: bytes, *, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> None:
    """Refuse deep or huge JSON before parsing it, at C speed, in bounded memory.

    Strings are cut out, then only brackets and commas are looked at: more than
    ``max_items`` values (containers + separators) or nesting deeper than ``max_depth``
    raises :class:`JsonTooComplex`. A 4 MiB body of ``[],[],...`` would otherwise become
    a million Python lists, twice (here and in the SDK), for seconds of CPU.
    """
    skeleton = _JSON_STRING.sub(b"", body).translate(None, _NOT_STRUCTURE)
    opens = skeleton.count(b"[") + skeleton.count(b"{")
    if opens + skeleton.count(b",") > max_items:
        raise JsonTooComplex(f"JSON with more than {max_items} values")
    brackets = skeleton.translate(None, b",")
    steps = (1 if c in (0x5B, 0x7B) else -1 for c in brackets)
    if max(itertools.accumulate(steps), default=0) > max_depth:
        raise JsonTooComplex(f"JSON nested deeper than {max_depth} levels")


def _measure(obj: Any, depth: int = 1) -> tuple[int, int, bool]:
    """(nesting depth, object keys in all, no float anywhere) of a parsed JSON value."""
    kind = type(obj)
    if kind is dict:
        deepest, keys, finite = depth, len(obj), True
        for value in obj.values():
            if type(value) in (dict, list, float):
                d, k, f = _measure(value, depth + 1)
                deepest, keys, finite = max(deepest, d), keys + k, finite and f
        return deepest, keys, finite
    if kind is list:
        deepest, keys, finite = depth, 0, True
        for value in obj:
            if type(value) in (dict, list, float):
                d, k, f = _measure(value, depth + 1)
                deepest, keys, finite = max(deepest, d), keys + k, finite and f
        return deepest, keys, finite
    if kind is float:  # orjson turns integers beyond 64 bits into floats: let the careful path decide
        return depth - 1, 0, False
    return depth - 1, 0, True


def fast_strict_json(body: bytes, max_depth: int, max_items: int) -> Any | None:
    """The strict parse of a small, ordinary body at C speed, or None to take the careful path.

    Sound by construction: orjson accepts only RFC 8259 JSON (valid UTF-8, no NaN/Infinity);
    what it cannot vouch for is handed to the careful path: any float (orjson reads an
    integer beyond 64 bits, or 1e400, as a float, where the careful path keeps the integer or
    refuses the infinity). A body no longer than
    ``max_items`` cannot hold more values than that. Duplicate keys: every key in the text is
    followed by a colon, so when the body holds exactly as many colons as the parsed objects
    hold keys, no key was repeated (colons inside strings only make it fall back).
    """
    if len(body) > max_items or len(body) > FAST_PARSE_BYTES:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    depth, keys, no_float = _measure(obj)
    if depth > max_depth or not no_float or body.count(b":") != keys:
        return None
    return obj


def parse_strict_json(body: bytes) -> Any:
    """RFC 8259 JSON only: UTF-8, no NaN/Infinity, no duplicate keys; else InvalidJson."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise E.InvalidJson("request body is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constants, parse_float=_finite)
    except _DuplicateKey as exc:
        raise E.InvalidJson(f"duplicate key {exc.args[0]!r} in a JSON object") from None
    except RecursionError:
        raise E.InvalidJson("JSON nested too deeply") from None
    except ValueError:
        raise E.InvalidJson() from None
