"""Store URLs, parsed (pure).

    sqlite:///relative/path.db         a file relative to the working directory
    sqlite:////absolute/path.db        an absolute path (four slashes)
    postgresql://user@host:port/db     also postgres://; asyncpg DSN options pass through
    postgresql://...?schema=NAME       isolate in schema NAME (created if missing, search_path)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class StoreURL:
    backend: Literal["sqlite", "postgresql"]
    path: str | None = None      # sqlite
    dsn: str | None = None       # postgresql, without the schema option
    schema: str | None = None    # postgresql


def parse_store_url(url: str) -> StoreURL:
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"not a store URL: {url!r} (use sqlite:///path.db or postgresql://...)")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return _sqlite(url)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url)
    raise ValueError(
        f"unknown store URL scheme {scheme!r}: use sqlite:///relative.db, sqlite:////absolute.db "
        "or postgresql://user@host:port/db[?schema=name]"
    )


def _sqlite(url: str) -> StoreURL:
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix):
        raise ValueError(
            f"SQLite URLs have no host: sqlite:///relative.db or sqlite:////absolute.db, got {url!r}"
        )
    path = url[len(prefix):]
    if not path or "?" in path or path == ":memory:":
        raise ValueError(f"SQLite URL needs a plain file path without options, got {url!r}")
    return StoreURL("sqlite", path=path)


def _postgres(url: str) -> StoreURL:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1:
        raise ValueError("the schema option may appear once")
    schema = schemas[0] if schemas else None
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise ValueError(f"schema must match {_SCHEMA_RE.pattern}, got {schema!r}")
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, rest, parts.fragment))
    return StoreURL("postgresql", dsn=dsn, schema=schema)
