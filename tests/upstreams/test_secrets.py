"""Sealing (key file, AES-GCM), substitution, redaction, and the log record scrubber."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
from pathlib import Path
from urllib.parse import quote

import pytest

from northstar.common.errors import SecretsUnavailable
from northstar.upstreams import Redactor, SecretBox, key_path
from northstar.upstreams import secrets as secret_mod
from northstar.upstreams.secrets import load_or_create_key, render

SECRET = "p@ss/word+with spaces&\"quotes\"-0123"


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "secrets.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["secrets.key"]  # no temporary file left


def _create(path: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(load_or_create_key(Path(path)))


def test_two_processes_racing_agree_on_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    path = str(tmp_path / "secrets.key")
    procs = [ctx.Process(target=_create, args=(path, out)) for _ in range(4)]
    for p in procs:
        p.start()
    keys = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(timeout=60)
    assert len(keys) == 1 and load_or_create_key(Path(path)) in keys


def test_key_path_prefers_the_environment(tmp_path: Path) -> None:
    assert key_path(tmp_path, {}) == tmp_path / "secrets.key"
    assert key_path(tmp_path, {"NORTHSTAR_SECRETS_KEY_FILE": "/run/k"}) == Path("/run/k")


def test_a_broken_key_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    path.write_text("not base64 at all!!\n")
    os.chmod(path, 0o600)
    with pytest.raises(SecretsUnavailable):
        load_or_create_key(path)


def test_seal_and_open_are_bound_to_key_and_upstream(tmp_path: Path) -> None:
    box = SecretBox(os.urandom(32))
    sealed = box.seal("tickets", {"token": SECRET})
    assert SECRET not in str(sealed) and sealed["kid"] == box.kid
    assert box.open("tickets", sealed) == {"token": SECRET}
    with pytest.raises(SecretsUnavailable, match="another key"):
        SecretBox(os.urandom(32)).open("tickets", sealed)
    with pytest.raises(SecretsUnavailable, match="do not open"):
        box.open("files", sealed)  # copied to another upstream
    tampered = {**sealed, "ct": sealed["ct"][:-4] + ("AAAA" if not sealed["ct"].endswith("AAAA") else "BBBB")}
    with pytest.raises(SecretsUnavailable):
        box.open("tickets", tampered)
    assert SECRET not in repr(box)


def test_render_substitutes_references() -> None:
    assert render("Bearer {secret:token} for {secret:user}", {"token": "t1", "user": "u1"}) == "Bearer t1 for u1"


def test_redactor_masks_every_form_of_a_secret() -> None:
    r = Redactor([SECRET, "other-secret-value"])
    for form in (SECRET, quote(SECRET, safe=""), json.dumps(SECRET)[1:-1]):
        assert r.scrub(f"before {form} after") == "before [redacted] after"
    nested = {"a": [f"x{SECRET}y", {"other-secret-value": 1}], "n": 3}
    assert r.scrub_json(nested) == {"a": ["x[redacted]y", {"[redacted]": 1}], "n": 3}
    assert not Redactor([]) and Redactor([]).scrub(SECRET) == SECRET


def test_log_records_carrying_a_live_secret_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor([SECRET])
    token = secret_mod.register(redactor)
    sdk_log = logging.getLogger("mcp.client.stdio")
    try:
        with caplog.at_level(logging.INFO):
            sdk_log.warning("parse failed: %s", f"garbage {SECRET}")
            try:
                raise ValueError(f"bad line {SECRET}")
            except ValueError:
                sdk_log.exception("Failed to parse JSONRPC message from server")
            logging.getLogger("elsewhere").info("args too: %r", {"detail": SECRET})
    finally:
        secret_mod.unregister(token)
    text = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    assert SECRET not in text and text.count("[redacted]") >= 3
    with caplog.at_level(logging.INFO):
        logging.getLogger("elsewhere").info("after unregister: %s", "plain")
    assert "after unregister: plain" in caplog.text
