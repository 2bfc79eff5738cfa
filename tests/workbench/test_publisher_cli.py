"""The workbench CLI in direct-store mode: drafts, sandbox, publish, registry, rollback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from northstar.cli import workbench as cli_workbench
from northstar.common.config import Settings
from tests.workbench.workbench_kit import notes_spec


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir")
    p.add_argument("--store-url")
    p.add_argument("--log-level")


def run(data_dir: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    parser = argparse.ArgumentParser(prog="northstar")
    cli_workbench.add_parsers(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args([*argv, "--data-dir", str(data_dir)])
    code = args.handler(Settings(data_dir=data_dir, log_level="WARNING"), args)
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_the_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "notes.json"
    spec_file.write_text(json.dumps(notes_spec()), encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()

    code, draft = run(data, capsys, "drafts", "put", "notes", "--spec-file", str(spec_file), "--tenant", "acme")
    assert code == 0 and draft["version"] == 1
    code, listed = run(data, capsys, "drafts", "list", "--tenant", "acme")
    assert [d["draft_id"] for d in listed["drafts"]] == ["notes"]
    code, got = run(data, capsys, "drafts", "get", "notes", "--version", "1", "--tenant", "acme")
    assert got["spec"]["tool_id"] == "notes"

    code, result = run(data, capsys, "sandbox", "run", "notes.add_note", "--args", '{"name": "a", "content_text": "b"}',
                       "--mock-policy", '{"grants": ["firearm.notes.write"]}', "--draft", "notes", "--tenant", "acme")
    assert code == 0 and result["ok"] is True and result["sandbox"] is True

    code, published = run(data, capsys, "publish", "notes", "--version", "1", "--tenant", "acme")
    assert code == 0 and published["package"]["id"] == "notes@1.0.0"
    spec_file.write_text(json.dumps(notes_spec(description="Second.")), encoding="utf-8")
    run(data, capsys, "drafts", "put", "notes", "--spec-file", str(spec_file), "--tenant", "acme")
    code, second = run(data, capsys, "publish", "notes", "--version", "2", "--tenant", "acme")
    assert second["package"]["version"] == "1.0.1"

    code, registry = run(data, capsys, "registry", "list", "notes")
    assert [p["version"] for p in registry["packages"]] == ["1.0.0", "1.0.1"]
    code, back = run(data, capsys, "rollback", "notes", "1.0.0")
    assert code == 0 and back["overlay"]["package_version"] == "1.0.0"

    # A published tool is live for an in-process runtime that follows the overlays.
    code, live = run(data, capsys, "sandbox", "run", "notes.list_notes", "--tenant", "acme")
    assert code == 0 and live["ok"] is True, live

    code, _ = run(data, capsys, "unpublish", "notes")
    assert code == 0
    code, nothing = run(data, capsys, "registry", "list", "missing")
    assert code == 1 and nothing is None
