"""``northstar config show``: the effective settings, where each comes from, secrets masked.

    northstar config show [--format text|json] [--config PATH] [--host H] [--port P] ...

It takes the same options as ``serve``, so it shows exactly what ``serve`` would run with.
The text form is TOML with each value's source as a comment (flag, env, file, default); the
JSON form is ``{"config_file", "settings": {name: {"value", "source"}}}``.

Masking (:func:`masked`): a setting declared secret is never shown; in any other text value
(store URLs, OAuth URLs) a password in a URL, the user part of an HTTP URL, and query
parameters named like credentials are masked. Settings that name a key file show the path,
never the file's contents: this command reads no file but the config file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from northstar.common.config import Settings

MASK = "****"
#: Query parameters whose value may be a credential (sslpassword, api_key, access_token, sig ...).
SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|sig|auth|cred", re.IGNORECASE)


def is_secret(name: str) -> bool:
    extra = Settings.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and extra.get("secret") is True


def masked(name: str, value: Any) -> Any:
    """``value`` as ``config show`` prints it."""
    if value is None:
        return None
    if is_secret(name):
        return MASK
    if isinstance(value, list):
        return [mask_text(item) if isinstance(item, str) else item for item in value]
    return mask_text(value) if isinstance(value, str) else value


def mask_text(text: str) -> str:
    """A URL's credentials masked (password; an HTTP URL's user too; credential-like query values)."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        return MASK  # not a URL we can take apart: it could hide anything
    shown = SplitResult(parts.scheme, _netloc(parts), parts.path, _query(parts.query), parts.fragment)
    return text if shown == parts else urlunsplit(shown)


def _netloc(parts: SplitResult) -> str:
    if "@" not in parts.netloc:
        return parts.netloc
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, has_password, _ = userinfo.partition(":")
    if parts.scheme in ("http", "https"):  # in an HTTP URL the user part is itself a credential
        return f"{MASK}@{host}"
    return f"{user}:{MASK}@{host}" if has_password else f"{user}@{host}"


def _query(query: str) -> str:
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(SECRET_PARAM.search(k) for k, _ in pairs):
        return query
    return urlencode([(k, MASK if SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*/:")


def effective(loaded: Any) -> dict[str, dict[str, Any]]:
    """Every setting's shown value and source, in declaration order."""
    settings: Settings = loaded.settings
    out: dict[str, dict[str, Any]] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        value = str(value) if isinstance(value, Path) else value
        out[name] = {"value": masked(name, value), "source": loaded.sources[name]}
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def render_text(loaded: Any) -> str:
    file_line = f"{loaded.file} (from {loaded.file_from})" if loaded.file is not None else "none"
    lines = ["# northstar: the effective settings; after each, where it comes from",
             f"# config file: {file_line}"]
    for name, item in effective(loaded).items():
        if item["value"] is None:
            lines.append(f"# {name} is unset  # {item['source']}")
        else:
            lines.append(f"{name} = {toml_value(item['value'])}  # {item['source']}")
    return "\n".join(lines) + "\n"


def render_json(loaded: Any) -> str:
    body = {"config_file": None if loaded.file is None else str(loaded.file), "config_file_from": loaded.file_from,
            "settings": effective(loaded)}
    return json.dumps(body, indent=2) + "\n"


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    render = render_json if args.format == "json" else render_text
    sys.stdout.write(render(args.loaded))
    return 0


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None],
                serve_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    cfg = sub.add_parser("config", help="the effective settings")
    csub = cfg.add_subparsers(dest="action", required=True)
    show = csub.add_parser("show", help="print the effective settings, the source of each, secrets masked")
    show.add_argument("--format", choices=("text", "json"), default="text")
    serve_flags(show)
    common(show)
    show.set_defaults(handler=cmd_config, makes_data_dir=False)
