"""Where each setting comes from: flags over ``NORTHSTAR_*`` variables over a TOML file over defaults.

The file (``northstar.toml``) holds the same settings as the variables, under the same names in
lower case, at the top level (``port = 8080``, ``allowed_hosts = ["gw.example.com"]``). Which
file is read:

1. ``--config PATH`` (any command), else
2. ``NORTHSTAR_CONFIG=PATH`` (an empty value: no file at all), else
3. ``./northstar.toml`` in the working directory, when there is one.

A file named by (1) or (2) must exist. The file is checked strictly, before anything starts:
an unknown key (a typo, a table) or a value of the wrong TOML type is a :class:`ConfigError`
naming the file and the key. TOML is typed, so no string is coerced: ``port = "80"`` is an
error, ``tool_timeout_s = 30`` (an integer for a float) is not. Paths are taken as written,
relative to the working directory like the variables'.

:func:`load_settings` returns the settings with the source of each value (``flag``, ``env``,
``file``, ``default``), which ``northstar config show`` prints.

Cold start: ``northstar stdio`` runs this on every launch, so ``tomllib`` and the strict
checks are imported only when there is a file to read (a missing ``./northstar.toml`` costs
one ``stat``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from northstar.common.config import Settings, from_environment

CONFIG_ENV = "NORTHSTAR_CONFIG"
DEFAULT_FILE = "northstar.toml"

Source = Literal["flag", "env", "file", "default"]


class ConfigError(Exception):
    """The settings cannot be taken as given; the message is one line naming the culprit."""


@dataclass(frozen=True)
class LoadedSettings:
    """The effective settings, the source of each value, and the file read (None: no file)."""

    settings: Settings
    sources: dict[str, Source]
    file: Path | None
    file_from: str | None = None  # "--config", "NORTHSTAR_CONFIG" or "./northstar.toml"


def config_path(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> tuple[Path | None, str | None]:
    """``(the file to read, what named it)``, or ``(None, None)``; a named file must exist."""
    if explicit is not None:
        return _must_exist(Path(explicit), "--config"), "--config"
    named = next((v for k, v in environ.items() if k.upper() == CONFIG_ENV), None)
    if named is not None:
        if named == "":
            return None, None
        return _must_exist(Path(named), CONFIG_ENV), CONFIG_ENV
    candidate = cwd / DEFAULT_FILE
    if candidate.is_file():
        return candidate, f"./{DEFAULT_FILE}"
    return None, None


def _must_exist(path: Path, named_by: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"config file {path} (from {named_by}): no such file")
    return path


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings, each checked against its field's type; ConfigError on any problem."""
    import tomllib

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {one_line(str(exc))}") from None
    problems = [p for key, value in data.items() if (p := _problem(key, value)) is not None]
    if problems:
        raise ConfigError(f"config file {path}: " + "; ".join(problems))
    return {key: Path(value) if _is_path(key) else value for key, value in data.items()}


def _problem(key: str, value: Any) -> str | None:
    field = Settings.model_fields.get(key)
    if field is None:
        import difflib

        close = difflib.get_close_matches(key.lower(), Settings.model_fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown setting {key!r}{hint}"
    if _is_path(key):
        return None if isinstance(value, str) else f"{key}: expected a string (a path), got {toml_type(value)}"
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(Any if field.annotation is None else field.annotation).validate_python(value, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where, culprit = "", value
        for part in first["loc"]:
            if isinstance(part, int) and isinstance(culprit, list):  # an array's item
                where, culprit = f"{where}[{part}]", culprit[part]
        return f"{key}{where}: {first['msg'][:1].lower()}{first['msg'][1:]}, got {toml_type(culprit)}"
    return None


def _is_path(key: str) -> bool:
    annotation = Settings.model_fields[key].annotation
    return annotation is Path or Path in get_args(annotation)


def toml_type(value: Any) -> str:
    """How TOML calls the type of a parsed value (for error messages)."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
             dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")  # datetime, date, time


def one_line(text: str) -> str:
    return " ".join(text.split())


def load_settings(flags: Mapping[str, Any], *, config: str | None = None,
                  environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> LoadedSettings:
    """Merge the sources (flag > env > file > default) into checked settings.

    ``flags`` holds only the options given on the command line. A bad value from the
    environment or a flag is a ConfigError naming the variable or the option.
    """
    environ = os.environ if environ is None else environ
    path, named_by = config_path(config, environ, Path.cwd() if cwd is None else cwd)
    layers: list[tuple[Source, Mapping[str, Any]]] = [
        ("file", read_config_file(path) if path is not None else {}),
        ("env", from_environment(environ)),
        ("flag", {k: v for k, v in flags.items() if v is not None}),
    ]
    merged: dict[str, Any] = {}
    sources: dict[str, Source] = dict.fromkeys(Settings.model_fields, "default")
    for source, values in layers:
        merged.update(values)
        sources.update(dict.fromkeys(values, source))
    return LoadedSettings(_checked(merged, sources, path), sources, path, named_by)


def _checked(values: dict[str, Any], sources: Mapping[str, Source], path: Path | None) -> Settings:
    from pydantic import ValidationError

    try:
        return Settings.from_values(values)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        origin = {"env": f"{Settings.env_name(name)}", "flag": f"--{name.replace('_', '-')}",
                  "file": f"config file {path}: {name}"}.get(sources.get(name, "default"), name)
        raise ConfigError(f"{origin}: {one_line(first['msg'])}") from None
