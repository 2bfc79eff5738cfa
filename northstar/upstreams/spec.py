"""The registration of an upstream MCP server: the edge model, its checks and its public view.

An admin registers an upstream as one JSON body::

    {"name": "tickets", "transport": "streamable_http", "url": "https://tickets.example/mcp",
     "headers": {"Authorization": "Bearer {secret:token}"}, "secrets": {"token": "..."}}

    {"name": "files", "transport": "stdio", "command": "uvx", "args": ["files-mcp"],
     "env": {"FILES_TOKEN": "{secret:token}"}, "cwd": "/srv/files", "secrets": {"token": "..."}}

Every field has a range (names, lengths, list sizes, timeouts); URLs are ``http``/``https``
without credentials in them. A header or env value refers to a secret as ``{secret:NAME}``;
an unknown name, or a reference anywhere else, is a validation error. Secret values are
``SecretStr`` (their ``repr`` never shows them) and :meth:`UpstreamSpec.public` names them
only. Credential-looking headers and env variables (``Authorization``, ``*_TOKEN``, ...)
must take their value from a secret, so a literal credential is never stored in clear.

:func:`parse_spec` turns a raw body into the model or raises ``ValidationFailed`` whose
``errors`` carry a JSON pointer and a message each, never the offending value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from northstar.common.errors import ValidationFailed

#: An upstream's name is also its tool id in northstar (the generated draft's ``tool_id``):
#: lowercase, no ``__``, short enough to leave room for operation names in a 64-character
#: wire name.
NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,30}[a-z0-9])?$"
MAX_NAME = 32
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
SECRET_REF = re.compile(r"\{secret:([^{}]*)\}")
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,255}$"
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$"
MIN_SECRET_LEN = 8  # shorter values could not be redacted from text without mangling it
MAX_SECRET_LEN = 8192

# Headers the transport owns: an upstream spec may not set them.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "mcp-session-id",
                               "mcp-protocol-version", "accept", "content-type", "last-event-id", "upgrade"})
# Headers and env variables that carry credentials: their value must come from a secret.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})
_CREDENTIAL_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_KEY|CREDENTIAL)", re.IGNORECASE)

Transport = Literal["stdio", "streamable_http", "sse"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Reconnecting: exponential backoff between attempts, ``attempts`` per round."""

    attempts: int = Field(default=5, ge=1, le=100)
    initial_backoff_s: float = Field(default=0.5, ge=0.01, le=60.0)
    max_backoff_s: float = Field(default=30.0, ge=0.01, le=3600.0)
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)


class BreakerPolicy(_Strict):
    """The circuit breaker: ``failure_threshold`` consecutive failures open it for ``open_s``."""

    failure_threshold: int = Field(default=5, ge=1, le=1000)
    open_s: float = Field(default=30.0, ge=0.05, le=3600.0)


class UpstreamSpec(_Strict):
    """One upstream MCP server, as registered (the REST body)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME)
    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, min_length=1, max_length=4000)
    transport: Transport
    # stdio
    command: str | None = Field(default=None, min_length=1, max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=256)
    env: dict[str, str] = Field(default_factory=dict, max_length=128)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    # streamable_http / sse
    url: str | None = Field(default=None, min_length=8, max_length=2048)
    headers: dict[str, str] = Field(default_factory=dict, max_length=64)
    secrets: dict[str, SecretStr] = Field(default_factory=dict, max_length=32)
    # The upstream's own sandbox target: sandbox runs go there, never to the real upstream.
    sandbox_url: str | None = Field(default=None, min_length=8, max_length=2048)
    sandbox_command: str | None = Field(default=None, min_length=1, max_length=4096)
    sandbox_args: list[str] | None = Field(default=None, max_length=256)
    # limits
    max_concurrency: int = Field(default=8, ge=1, le=256)
    call_timeout_s: float = Field(default=30.0, ge=0.05, le=600.0)
    connect_timeout_s: float = Field(default=10.0, ge=0.05, le=120.0)
    max_result_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)

    @field_validator("name")
    @classmethod
    def _no_double_underscore(cls, value: str) -> str:
        if "__" in value:
            raise ValueError("must not contain '__'")
        return value

    @field_validator("args", "sandbox_args")
    @classmethod
    def _args(cls, value: list[str] | None) -> list[str] | None:
        for arg in value or ():
            if len(arg) > 8192 or "\x00" in arg:
                raise ValueError("each argument must be at most 8192 characters, without NUL")
        return value

    @field_validator("command", "sandbox_command", "cwd")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL")
        return value

    @field_validator("cwd")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("url", "sandbox_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value)
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not re.fullmatch(ENV_NAME_PATTERN, key):
                raise ValueError(f"env name {key!r} must match {ENV_NAME_PATTERN}")
            if len(item) > 16384 or "\x00" in item:
                raise ValueError(f"env {key}: at most 16384 characters, without NUL")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for key, item in value.items():
            if not re.fullmatch(HEADER_NAME_PATTERN, key):
                raise ValueError(f"header name {key!r} is not a valid token")
            lowered = key.lower()
            if lowered in _RESERVED_HEADERS:
                raise ValueError(f"header {key} is set by the transport")
            if lowered in seen:
                raise ValueError(f"header {key} appears twice")
            seen.add(lowered)
            if len(item) > 8192 or any(c in item for c in "\r\n\x00"):
                raise ValueError(f"header {key}: at most 8192 characters, no CR, LF or NUL")
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key, item in value.items():
            if not re.fullmatch(SECRET_NAME_PATTERN, key):
                raise ValueError(f"secret name {key!r} must match {SECRET_NAME_PATTERN}")
            size = len(item.get_secret_value())
            if not MIN_SECRET_LEN <= size <= MAX_SECRET_LEN:
                raise ValueError(f"secret {key}: {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters "
                                 "(shorter values cannot be redacted reliably)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamSpec:
        problems = list(self._transport_problems()) + list(self._reference_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _transport_problems(self) -> Iterator[str]:
        if self.transport == "stdio":
            if self.command is None:
                yield "a stdio upstream needs a command"
            for field in ("url", "sandbox_url"):
                if getattr(self, field) is not None:
                    yield f"{field} does not apply to a stdio upstream"
            if self.headers:
                yield "headers do not apply to a stdio upstream"
        else:
            if self.url is None:
                yield f"a {self.transport} upstream needs a url"
            for field in ("command", "cwd", "sandbox_command", "sandbox_args"):
                if getattr(self, field) is not None:
                    yield f"{field} does not apply to a {self.transport} upstream"
            if self.args or self.env:
                yield f"args and env do not apply to a {self.transport} upstream"

    def _reference_problems(self) -> Iterator[str]:
        for where, text in self._templated():
            for ref in SECRET_REF.findall(text):
                if ref not in self.secrets:
                    yield f"{where} refers to an unknown secret {ref!r}"
            if "{secret:" in SECRET_REF.sub("", text):
                yield f"{where} has a malformed secret reference (write {{secret:NAME}})"
        for where, text in self._plain():
            if "{secret:" in text:
                yield f"{where} may not refer to a secret (only header and env values may)"
        for key, text in self.headers.items():
            if key.lower() in _CREDENTIAL_HEADERS and not SECRET_REF.search(text):
                yield f"header {key} carries a credential: take it from a secret ({{secret:NAME}})"
        for key, text in self.env.items():
            if _CREDENTIAL_ENV.search(key) and text and not SECRET_REF.search(text):
                yield f"env {key} looks like a credential: take it from a secret ({{secret:NAME}})"

    def _templated(self) -> Iterator[tuple[str, str]]:
        yield from ((f"header {k}", v) for k, v in self.headers.items())
        yield from ((f"env {k}", v) for k, v in self.env.items())

    def _plain(self) -> Iterator[tuple[str, str]]:
        for field in ("command", "cwd", "url", "sandbox_url", "sandbox_command", "title", "description"):
            value = getattr(self, field)
            if value is not None:
                yield field, value
        for n, arg in enumerate([*self.args, *(self.sandbox_args or ())]):
            yield f"args[{n}]", arg

    # ------------------------------------------------------------------ views

    def secret_values(self) -> dict[str, str]:
        """The secret values by name (only the connection and the sealing code call this)."""
        return {k: v.get_secret_value() for k, v in self.secrets.items()}

    def public(self) -> dict[str, Any]:
        """The spec as JSON without any secret value: ``secrets`` is the sorted list of names."""
        data = self.model_dump(mode="json", exclude={"secrets"})
        data["secrets"] = sorted(self.secrets)
        return data

    def with_secrets(self, secrets: dict[str, str]) -> UpstreamSpec:
        """The same spec with these secret values (after unsealing a stored one)."""
        return self.model_copy(update={"secrets": {k: SecretStr(v) for k, v in secrets.items()}})

    def sandbox(self) -> UpstreamSpec | None:
        """The spec of the declared sandbox target (same name, secrets, limits), or None."""
        if self.transport == "stdio":
            if self.sandbox_command is None:
                return None
            args = self.args if self.sandbox_args is None else self.sandbox_args
            return self.model_copy(update={"command": self.sandbox_command, "args": list(args)})
        if self.sandbox_url is None:
            return None
        return self.model_copy(update={"url": self.sandbox_url})


def check_url(value: str) -> None:
    """An upstream URL: http or https, a host, no credentials, no fragment."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http or https URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials: use headers with {secret:NAME}")
    if parts.fragment:
        raise ValueError("must not have a fragment")
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError("must not contain whitespace or control characters")


def _pointer(loc: tuple[int | str, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def parse_spec(raw: Any) -> UpstreamSpec:
    """The model for a registration body, or ``ValidationFailed`` (values never echoed)."""
    if not isinstance(raw, dict):
        raise ValidationFailed("the upstream must be a JSON object", errors=[{"path": "", "message": "not an object"}])
    try:
        return UpstreamSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [{"path": _pointer(e["loc"]), "message": e["msg"]}
                  for e in exc.errors(include_url=False, include_input=False, include_context=False)]
        raise ValidationFailed("invalid upstream registration", errors=errors) from None
