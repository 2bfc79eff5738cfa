"""The config file and the precedence of the sources: flag > env > file > default.

``load_settings`` is given its environment and working directory, so each case states exactly
what it sees. Problems in the file are one-line errors naming the file and the key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from northstar.common.config import Settings
from northstar.common.config_file import ConfigError, LoadedSettings, load_settings


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, flags: dict[str, Any] | None = None, env: dict[str, str] | None = None,
         config: str | None = None) -> LoadedSettings:
    return load_settings(flags or {}, config=config, environ=env or {}, cwd=tmp_path)


# -- precedence -----------------------------------------------------------------------------------
# (setting, the file's TOML, the variable's text, the flag's value, and what each one yields)
LAYERS = [
    ("port", "1001", "1002", 1003, (1001, 1002, 1003)),
    ("data_dir", '"from-file"', "from-env", "from-flag", (Path("from-file"), Path("from-env"), Path("from-flag"))),
    ("log_level", '"ERROR"', "WARNING", "DEBUG", ("ERROR", "WARNING", "DEBUG")),
    ("store_url", '"sqlite:///f.db"', "sqlite:///e.db", "sqlite:///g.db",
     ("sqlite:///f.db", "sqlite:///e.db", "sqlite:///g.db")),
]


@pytest.mark.parametrize(("name", "in_file", "in_env", "flag", "expected"), LAYERS, ids=[c[0] for c in LAYERS])
def test_flag_beats_env_beats_file_beats_default(tmp_path: Path, name: str, in_file: str, in_env: str, flag: Any,
                                                 expected: tuple[Any, Any, Any]) -> None:
    write(tmp_path / "northstar.toml", f"{name} = {in_file}\n")
    env = {Settings.env_name(name): in_env}
    default = Settings.model_fields[name].default
    steps = [
        (load(tmp_path, {name: flag}, env), expected[2], "flag"),
        (load(tmp_path, {}, env), expected[1], "env"),
        (load(tmp_path), expected[0], "file"),
        (load(tmp_path, env={"NORTHSTAR_CONFIG": ""}), default, "default"),
    ]
    for loaded, value, source in steps:
        assert getattr(loaded.settings, name) == value, source
        assert loaded.sources[name] == source


def test_every_source_at_once_each_setting_keeps_its_own(tmp_path: Path) -> None:
    write(tmp_path / "northstar.toml", 'port = 1\nhost = "0.0.0.0"\nallowed_hosts = ["gw.example.com"]\n'
                                       "tool_timeout_s = 12\nenable_diagnostics = true\n")
    loaded = load(tmp_path, {"port": 3, "host": None}, {"NORTHSTAR_TOOL_TIMEOUT_S": "7.5", "northstar_port": "2"})
    s = loaded.settings
    assert (s.port, s.host, s.allowed_hosts, s.tool_timeout_s, s.enable_diagnostics) == (
        3, "0.0.0.0", ["gw.example.com"], 7.5, True)
    assert {k: loaded.sources[k] for k in ("port", "host", "allowed_hosts", "tool_timeout_s", "enable_diagnostics",
                                           "log_level")} == {
        "port": "flag", "host": "file", "allowed_hosts": "file", "tool_timeout_s": "env",
        "enable_diagnostics": "file", "log_level": "default"}
    assert isinstance(s.tool_timeout_s, float)


def toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return repr(value)


def a_value_for(name: str) -> Any:
    """A value of the setting's type that differs from its default."""
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    annotation = str(Settings.model_fields[name].annotation)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        return default + 1
    if isinstance(default, list):
        return ["a.example", "b.example"]
    if "Literal" in annotation:
        return {"log_format": "text", "auth_mode": "headers", "unauthorized_tools": "hide", "limits_backend": "redis",
                "limits_fail": "closed"}[name]
    if name == "redis_url":
        return "redis://limits.example:6380/1"
    if "Path" in annotation:
        return Path(f"/srv/{name}")
    if name == "metrics_bind":  # host:port
        return "127.0.0.1:9464"
    return f"value-of-{name}"


def test_every_setting_can_be_set_in_the_file(tmp_path: Path) -> None:
    """The file holds exactly the settings the variables do, under the same names."""
    values = {name: a_value_for(name) for name in Settings.model_fields}
    write(tmp_path / "all.toml", "".join(f"{name} = {toml_literal(v)}\n" for name, v in values.items()))
    loaded = load(tmp_path, config=str(tmp_path / "all.toml"))
    for name, value in values.items():
        assert getattr(loaded.settings, name) == value, name
        assert loaded.sources[name] == "file", name


# -- which file ------------------------------------------------------------------------------------
def test_which_file_is_read(tmp_path: Path) -> None:
    write(tmp_path / "northstar.toml", "port = 1\n")
    write(tmp_path / "env.toml", "port = 2\n")
    write(tmp_path / "flag.toml", "port = 3\n")
    env = {"NORTHSTAR_CONFIG": str(tmp_path / "env.toml")}
    assert load(tmp_path).settings.port == 1
    assert load(tmp_path).file_from == "./northstar.toml"
    assert load(tmp_path, env=env).settings.port == 2
    assert load(tmp_path, env=env, config=str(tmp_path / "flag.toml")).settings.port == 3
    assert load(tmp_path, env=env, config=str(tmp_path / "flag.toml")).file_from == "--config"
    off = load(tmp_path, env={"NORTHSTAR_CONFIG": ""})
    assert (off.file, off.settings.port) == (None, 8000)  # an empty NORTHSTAR_CONFIG: no file at all
    empty_dir = tmp_path / "elsewhere"
    empty_dir.mkdir()
    assert load(empty_dir).file is None  # no ./northstar.toml: defaults, no error


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_named_file_must_exist(tmp_path: Path, how: str) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as caught:
        if how == "flag":
            load(tmp_path, config=missing)
        else:
            load(tmp_path, env={"NORTHSTAR_CONFIG": missing})
    assert str(caught.value) == f"config file {missing} (from {'--config' if how == 'flag' else 'NORTHSTAR_CONFIG'})" \
                                ": no such file"


# -- problems in the file ----------------------------------------------------------------------------
BAD = [
    ("prot = 8080", "unknown setting 'prot' (did you mean 'port'?)"),
    ("[limits]\nmax_body_bytes = 1", "unknown setting 'limits' (did you mean 'limits_fail'?)"),
    ("PORT = 8080", "unknown setting 'PORT' (did you mean 'port'?)"),
    ('port = "8080"', "port: input should be a valid integer, got a string"),
    ("port = 80.0", "port: input should be a valid integer, got a float"),
    ("port = true", "port: input should be a valid integer, got a boolean"),
    ("host = 127", "host: input should be a valid string, got an integer"),
    ("tool_timeout_s = false", "tool_timeout_s: input should be a valid number, got a boolean"),
    ('enable_diagnostics = "yes"', "enable_diagnostics: input should be a valid boolean, got a string"),
    ('log_format = "xml"', "log_format: input should be 'json' or 'text', got a string"),
    ('allowed_hosts = "a,b"', "allowed_hosts: input should be a valid list, got a string"),
    ('allowed_hosts = ["a", 2]', "allowed_hosts[1]: input should be a valid string, got an integer"),
    ("data_dir = 3", "data_dir: expected a string (a path), got an integer"),
    ("oauth_issuer = 2026-01-01T00:00:00Z", "oauth_issuer: input should be a valid string, got a datetime"),
]


@pytest.mark.parametrize(("text", "problem"), BAD, ids=[b[0].split("=")[0].strip() for b in BAD])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "bad.toml", text + "\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config=str(path))
    assert str(caught.value) == f"config file {path}: {problem}"


def test_every_problem_of_a_file_is_in_its_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "northstar.toml", 'prot = 1\nport = "x"\nlog_format = "xml"\n')
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config file {path}: unknown setting 'prot'")
    assert "; port: " in message and "; log_format: " in message


def test_invalid_toml_names_the_file_and_the_place(tmp_path: Path) -> None:
    path = write(tmp_path / "northstar.toml", 'host = "a"\nport = \n')
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert str(caught.value) == f"config file {path}: not valid TOML: Invalid value (at line 2, column 8)"


def test_a_bad_variable_or_flag_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^NORTHSTAR_PORT: Input should be a valid integer"):
        load(tmp_path, env={"NORTHSTAR_PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"^NORTHSTAR_ALLOWED_HOSTS: Input should be a valid list"):
        load(tmp_path, env={"NORTHSTAR_ALLOWED_HOSTS": "[not json"})
    with pytest.raises(ConfigError, match=r"^--log-format: Input should be 'json' or 'text'"):
        load(tmp_path, {"log_format": "xml"})


def test_no_file_costs_no_toml_parser() -> None:
    """``northstar stdio`` starts on every Claude Desktop launch: without a file, tomllib (and the
    strict checks) are never imported."""
    code = ("import sys, pathlib, tempfile; from northstar.common.config_file import load_settings; "
            "load_settings({}, environ={}, cwd=pathlib.Path(tempfile.mkdtemp())); "
            "print(sorted(m for m in ('tomllib', 'difflib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_the_example_file_in_the_docs_loads(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    example = docs.split("```toml\n", 1)[1].split("```", 1)[0]
    loaded = load(tmp_path, config=str(write(tmp_path / "example.toml", example)))
    assert loaded.settings.allowed_hosts == ["gw.example.com"] and loaded.settings.oauth_enabled
    assert sum(source == "file" for source in loaded.sources.values()) == example.count(" = ")
