"""``northstar config show`` and the config file on the real command line (subprocesses).

Each command runs as a user would run it: a working directory, a few ``NORTHSTAR_*`` variables,
maybe flags and a ``northstar.toml``. A bad file stops every command with one line and exit 2
before anything starts; ``config show`` names each value's source and never prints a secret.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from northstar.cli.config import MASK, mask_text, masked
from northstar.common.config import Settings
from tests.harness import GatewayProcess, bearer, gateway_env

AUDIT_KEY_HEX = "ab" * 32


def run(cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # No NORTHSTAR_* variable but the case's own: each case chooses its file the way a user would.
    base = {k: v for k, v in gateway_env(cwd / "data").items() if not k.startswith("NORTHSTAR_")}
    return subprocess.run([sys.executable, "-m", "northstar", *args], cwd=cwd, env={**base, **(env or {})},
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)


def shown(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    settings: dict[str, dict[str, Any]] = json.loads(done.stdout)["settings"]
    return settings


# -- a bad file: one line, exit 2, nothing started -------------------------------------------------------
@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["stdio"], ["audit", "verify"], ["config", "show"]])
def test_a_bad_file_stops_every_command_with_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "northstar.toml").write_text('port = "eighty"\n')
    done = run(tmp_path, *command, stdin='{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
    assert done.returncode == 2
    assert done.stderr == (f"northstar: config file {tmp_path / 'northstar.toml'}: "
                           "port: input should be a valid integer, got a string\n")
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()  # nothing started, no data directory made


def test_a_bad_variable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run(tmp_path, "config", "show", env={"NORTHSTAR_MAX_BODY_BYTES": "lots"})
    assert done.returncode == 2
    assert done.stderr.startswith("northstar: NORTHSTAR_MAX_BODY_BYTES: Input should be a valid integer")
    assert done.stderr.count("\n") == 1


# -- config show ------------------------------------------------------------------------------------------
def test_config_show_names_the_source_of_every_value(tmp_path: Path) -> None:
    (tmp_path / "northstar.toml").write_text('port = 9001\nhost = "0.0.0.0"\nlog_level = "ERROR"\n')
    done = run(tmp_path, "config", "show", "--format", "json", "--host", "127.0.0.2",
               env={"NORTHSTAR_PORT": "9002"})
    settings = shown(done)
    assert set(settings) == set(Settings.model_fields)
    assert settings["host"] == {"value": "127.0.0.2", "source": "flag"}
    assert settings["port"] == {"value": 9002, "source": "env"}
    assert settings["log_level"] == {"value": "ERROR", "source": "file"}
    assert settings["max_body_bytes"] == {"value": 4 * 1024 * 1024, "source": "default"}
    assert json.loads(done.stdout)["config_file"] == str(tmp_path / "northstar.toml")
    assert not (tmp_path / "data").exists()  # showing settings creates nothing


def test_config_show_text_is_toml_with_the_sources(tmp_path: Path) -> None:
    (tmp_path / "northstar.toml").write_text('allowed_hosts = ["gw.example.com"]\n')
    done = run(tmp_path, "config", "show", env={"NORTHSTAR_ENABLE_DIAGNOSTICS": "true"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"# config file: {tmp_path / 'northstar.toml'} (from ./northstar.toml)" in lines
    assert 'allowed_hosts = ["gw.example.com"]  # file' in lines
    assert "enable_diagnostics = true  # env" in lines
    assert "port = 8000  # default" in lines
    assert "# oauth_issuer is unset  # default" in lines
    # Every line is TOML (a comment or `name = value`): the values parse back as they were set.
    import tomllib

    parsed = tomllib.loads(done.stdout)
    assert parsed["allowed_hosts"] == ["gw.example.com"] and parsed["enable_diagnostics"] is True
    assert set(parsed) | {m for m in re.findall(r"^# (\w+) is unset", done.stdout, re.M)} == set(Settings.model_fields)


def test_config_show_never_prints_a_secret(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "audit.key"
    key_file.parent.mkdir()
    key_file.write_text(AUDIT_KEY_HEX + "\n")
    (tmp_path / "northstar.toml").write_text(
        f'audit_key_file = "{key_file}"\n'
        'oauth_jwks_url = "https://jwks-user:jwks-pass@issuer.example/jwks?api_key=s3cr3t-q&kid=1"\n'
        'oauth_authorization_servers = ["https://tok-en@as.example/"]\n')
    env = {"NORTHSTAR_STORE_URL": "postgresql://app:hunter2@db.example:5432/ns?sslpassword=pw-in-query&schema=s"}
    for fmt in ("text", "json"):
        done = run(tmp_path, "config", "show", "--format", fmt, env=env)
        assert done.returncode == 0, done.stderr
        for secret in (AUDIT_KEY_HEX, "hunter2", "pw-in-query", "jwks-user", "jwks-pass", "s3cr3t-q", "tok-en"):
            assert secret not in done.stdout, (fmt, secret)
    settings = shown(run(tmp_path, "config", "show", "--format", "json", env=env))
    assert settings["store_url"]["value"] == f"postgresql://app:{MASK}@db.example:5432/ns?sslpassword={MASK}&schema=s"
    assert settings["audit_key_file"] == {"value": str(key_file), "source": "file"}  # the path, not the key
    assert settings["oauth_jwks_url"]["value"] == f"https://{MASK}@issuer.example/jwks?api_key={MASK}&kid=1"
    assert settings["oauth_authorization_servers"]["value"] == [f"https://{MASK}@as.example/"]


def test_masking_keeps_what_is_not_a_credential() -> None:
    for plain in ("postgresql://postgres@127.0.0.1:5432/test?schema=s", "sqlite:///data/northstar.db",
                  "https://issuer.example/.well-known/jwks.json?kid=1", "127.0.0.1", "northstar:admin"):
        assert mask_text(plain) == plain
    assert mask_text("postgresql://u:p@h:notaport/db") == MASK  # cannot be taken apart: hidden whole
    assert masked("port", 8000) == 8000 and masked("oauth_issuer", None) is None


def test_a_setting_declared_secret_is_masked_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Settings.model_fields["oauth_issuer"], "json_schema_extra", {"secret": True})
    assert masked("oauth_issuer", "https://issuer.example") == MASK


SECRET_NAME = re.compile(r"secret|token|password|passwd|credential|api_key|private")


def test_a_setting_named_like_a_secret_is_declared_secret() -> None:
    """A new setting that holds a secret itself must say so, or ``config show`` would print it.
    (A path to a key file, ``*_file``, is not itself secret: its contents are never read here.)"""
    undeclared = [name for name, field in Settings.model_fields.items()
                  if SECRET_NAME.search(name) and not name.endswith("_file")
                  and not (isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret"))]
    assert not undeclared, f"declare these json_schema_extra={{'secret': True}}: {undeclared}"


# -- a real serve reads the file ----------------------------------------------------------------------------
def test_serve_runs_with_the_file_and_the_variables_over_it(tmp_path: Path) -> None:
    config = tmp_path / "northstar.toml"
    config.write_text("enable_diagnostics = true\nmax_body_bytes = 70000\n")
    env = {"NORTHSTAR_CONFIG": str(config), "NORTHSTAR_MAX_BODY_BYTES": "60000"}
    with GatewayProcess(tmp_path / "data", env=env, auth_mode=None) as gw:
        tools = httpx2.get(f"{gw.url}/v1/tools", headers=bearer(gw.admin_key), timeout=10).json()
        assert "diagnostics" in json.dumps(tools)  # from the file
        too_big = httpx2.post(f"{gw.url}/v1/tools/echo.ping/call", headers=bearer(gw.admin_key), timeout=10,
                              content=b'{"arguments": {"message": "' + b"x" * 65000 + b'"}}',
                              )
        assert too_big.status_code == 413  # 60000 from the variable, not 70000 from the file
        assert any(json.loads(line).get("msg") == "config file" and json.loads(line)["path"] == str(config)
                   for line in gw.lines if line.startswith("{"))
