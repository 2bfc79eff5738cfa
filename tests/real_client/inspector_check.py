"""Judge one MCP Inspector CLI run (``--format json -q``) for repro_real_client.sh.

    python inspector_check.py KIND STDOUT_FILE STDERR_FILE EXIT_CODE

KIND is ``list`` (echo and every media_v2 operation listed, wire-safe names), ``echo``
(``echo__ping`` answered ``pong``) or ``denied`` (``media_v2__create_asset`` refused with
``firearm_required``). Prints nothing and exits 0 when the run is as expected; otherwise
prints one line saying what was seen and exits 1, or exits 3 for a known client-side
rejection (see ``KNOWN_ISSUES``) that the script reports as SKIP unless it runs strict.
Standard library only: this judges a third-party client's output, it is not northstar code.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

WIRE_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EXPECTED_TOOLS = ("echo__ping", "media_v2__create_asset", "media_v2__get_asset", "media_v2__list_assets",
                  "media_v2__delete_asset")
# Failures with a known cause outside northstar, reported as SKIP with that cause (none now:
# error results carry no structuredContent, which TypeScript-SDK clients validate).
KNOWN_ISSUES: dict[str, str] = {}


class Mismatch(Exception):
    pass


def result_of(stdout: str) -> dict[str, Any]:
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise Mismatch(f"output is not JSON: {stdout[:200]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("result"), dict):
        raise Mismatch(f"no result in output: {stdout[:200]!r}")
    return doc["result"]


def check_list(result: dict[str, Any]) -> None:
    names = [t.get("name") for t in result.get("tools", [])]
    missing = [n for n in EXPECTED_TOOLS if n not in names]
    if missing:
        raise Mismatch(f"missing tools {missing}; listed {names}")
    bad = [n for n in names if not isinstance(n, str) or not WIRE_NAME.fullmatch(n)]
    if bad:
        raise Mismatch(f"names a real client rejects: {bad}")


def check_echo(result: dict[str, Any]) -> None:
    out = result.get("structuredContent") or {}
    if result.get("isError") or out.get("pong") is not True or out.get("message") != "hi":
        raise Mismatch(f"unexpected echo result {json.dumps(result)[:300]}")


def error_in(result: dict[str, Any]) -> dict[str, Any]:
    """The error envelope as a client (or the model) reads it: JSON in the text content."""
    for item in result.get("content") or []:
        if item.get("type") == "text":
            try:
                return dict(json.loads(item["text"]).get("error") or {})
            except (ValueError, AttributeError):
                return {}
    return {}


def check_denied(result: dict[str, Any]) -> None:
    err = error_in(result)
    if not result.get("isError") or err.get("code") != "firearm_required":
        raise Mismatch(f"expected an isError firearm_required result, got {json.dumps(result)[:300]}")


CHECKS = {"list": check_list, "echo": check_echo, "denied": check_denied}


# The Inspector CLI prints an isError result, then exits with its TOOL_ERROR code.
TOOL_ERROR_EXIT = 5


def judge(kind: str, stdout: str, stderr: str, code: int) -> tuple[int, str]:
    if kind == "denied" and code == TOOL_ERROR_EXIT:
        code = 0
    if code != 0:
        said = " ".join((stderr or stdout).split())
        for needle, meaning in KNOWN_ISSUES.items():
            if kind == "denied" and needle in said:
                return 3, f"known gateway issue: {meaning}; the Inspector said: {said[:160]}"
        return 1, f"inspector exited {code}: {said[-300:] or 'no output'}"
    try:
        CHECKS[kind](result_of(stdout))
    except Mismatch as exc:
        return 1, str(exc)
    return 0, ""


def main(argv: list[str]) -> int:
    kind, out_file, err_file, code = argv
    status, message = judge(kind, Path(out_file).read_text(errors="replace"),
                            Path(err_file).read_text(errors="replace"), int(code))
    if message:
        print(message)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
