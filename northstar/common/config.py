"""Gateway settings, read from ``NORTHSTAR_*`` environment variables (and CLI flags).

Every limit the gateway enforces is a setting here; ``docs/configuration.md`` lists them. The
command line also reads a TOML file with the same settings (:mod:`.config_file`: flag > env >
file > default). A setting that holds a secret itself (not a path to one) is declared with
``json_schema_extra={"secret": True}``; ``northstar config show`` masks it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "NORTHSTAR_"


def _env_value(field: Any, raw: str) -> Any:
    """An environment string for a field: lists take JSON (``["a","b"]``) or ``a,b``."""
    if get_origin(field.annotation) is list:
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return raw  # refused by the field's validation, which names the variable
        return [part.strip() for part in text.split(",") if part.strip()]
    return raw


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``NORTHSTAR_*`` variables that name a setting (case-insensitive), parsed."""
    environ = os.environ if environ is None else environ
    wanted = {f"{ENV_PREFIX}{name}".upper(): name for name in Settings.model_fields}
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        name = wanted.get(key.upper())
        if name is not None:
            out[name] = _env_value(Settings.model_fields[name], raw)
    return out


class Settings(BaseModel):
    """Settings: explicit arguments win over ``NORTHSTAR_*`` variables, which win over defaults.

    (The command line builds them with :func:`northstar.common.config_file.load_settings`:
    flags, variables and the config file, in that order of precedence.)

    (A small reader instead of pydantic-settings keeps ``northstar stdio``'s cold start short:
    Claude Desktop spawns it on every launch.)
    """

    model_config = ConfigDict(extra="ignore")

    def __init__(self, **data: Any) -> None:
        super().__init__(**{**from_environment(), **data})

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Settings:
        """Exactly ``values`` over the defaults, no environment lookup (the sources are merged
        already: :func:`northstar.common.config_file.load_settings`)."""
        self = cls.__new__(cls)
        BaseModel.__init__(self, **values)
        return self

    @staticmethod
    def env_name(name: str) -> str:
        """The environment variable of a setting: ``port`` -> ``NORTHSTAR_PORT``."""
        return f"{ENV_PREFIX}{name}".upper()

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    store_url: str | None = Field(
        default=None, description="sqlite:///path.db or postgresql://...; default: SQLite under data_dir"
    )
    # How long a SQLite write waits for a lock held by another process before the store
    # answers 503 store_unavailable.
    sqlite_busy_timeout_ms: int = 5000
    log_level: str = "INFO"
    # Serve /metrics WITHOUT a credential on this extra address too ("127.0.0.1:9464"; the main
    # port's /metrics always needs an admin credential). Off by default.
    metrics_bind: str | None = Field(default=None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
                                     description="host:port of the credential-free metrics port")
    log_format: Literal["json", "text"] = "json"

    # Authentication. "api_key" (the default): a credential (API key or OAuth token) on every
    # request, whatever the bind address or the peer. "headers": trust X-Tenant-Id / X-User-Id
    # as sent (never admin), an explicit operator choice warned about at start-up. "auto" is
    # the old name of the default and means "api_key".
    auth_mode: Literal["api_key", "headers", "auto"] = "api_key"
    # The audit log's keyed seal (northstar/storage/audit_seal.py): the key file (created 0600
    # on first use), the append-only anchor file, and how often the head is anchored.
    audit_key_file: Path | None = Field(default=None, description="default: <data_dir>/audit.key")
    audit_anchor_file: Path | None = Field(default=None, description="default: <data_dir>/audit.anchors")
    audit_anchor_every: int = 1000
    # Upstream MCP servers' secrets are sealed (AES-256-GCM) with this key (created 0600 on
    # first use); replicas of one store share it (docs/upstreams.md).
    secrets_key_file: Path | None = Field(default=None, description="default: <data_dir>/secrets.key")
    # media_v2's asset bytes (content-addressed files); replicas share one directory (a shared
    # mount), else an asset's bytes are readable only on the replica that wrote them.
    blobs_dir: Path | None = Field(default=None, description="default: <data_dir>/blobs")
    audit_anchor_interval_s: float = 5.0
    # A lone governed call (no other in flight) commits its audit record in its own task, on
    # the event loop's thread, instead of handing it to the flusher and the writer's thread
    # (SQLite; northstar/storage/audit.py). False: every record goes through the group commit.
    audit_commit_lone_inline: bool = True
    # OAuth 2.1 bearer tokens (JWT access tokens from an authorization server): on when the
    # issuer, the audience (this resource's identifier) and the JWKS URL are all set.
    oauth_issuer: str | None = None
    oauth_audience: str | None = None
    oauth_jwks_url: str | None = None
    oauth_tenant_claim: str = "tenant"
    oauth_user_claim: str = "sub"
    oauth_admin_scope: str = "northstar:admin"
    # The resource identifier in the metadata document (default: the audience).
    oauth_resource_url: str | None = None
    # The authorization servers in the metadata document (default: [issuer]).
    oauth_authorization_servers: list[str] = Field(default_factory=list)
    # DNS-rebinding protection (Host / Origin) for the MCP endpoints and REST.
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)

    # The diagnostics tool (sleep, crash) for fault drills; never on in production.
    enable_diagnostics: bool = False
    # Answer well-formed tools/call requests without the SDK's generic dispatch (see fastpath.py).
    fast_path: bool = True
    # tools/list: "mark" annotates operations the caller may not call, "hide" drops them.
    unauthorized_tools: Literal["mark", "hide", "show"] = "mark"
    # stdio: how long to wait for the client's first line, to answer a plain initialize before
    # the SDK and the runtime are loaded (see stdio_handshake.py); 0 turns that off.
    stdio_first_line_wait_s: float = 0.1
    # stdio: answer a plain first tools/list early too, from the last answer the same principal
    # got (<data_dir>/stdio/; list_changed follows if the catalogue changed since).
    stdio_list_snapshot: bool = True

    # Limits (docs/reliability.md says what each one does when it trips).
    max_body_bytes: int = 4 * 1024 * 1024
    # JSON bodies (MCP and REST) and stdio lines: nesting depth, and values (containers + items).
    max_json_depth: int = 64
    max_json_items: int = 100_000
    max_sessions: int = 10_000
    max_sessions_per_principal: int = 100
    max_sse_streams: int = 1_000
    max_sse_streams_per_principal: int = 20
    session_idle_timeout_s: float = 1800.0
    # A response write (an SSE event, a body chunk) that makes no progress for this long closes
    # the connection: a client that stopped reading cannot hold a stream, a session or shutdown.
    sse_send_timeout_s: float = 10.0
    sse_keepalive_s: float = 15.0
    tool_timeout_s: float = 30.0
    tool_timeout_max_s: float = 120.0
    # How long a held call's approval stays open (docs/approvals.md); a waiting call waits no longer.
    approval_ttl_s: float = Field(default=600.0, ge=1.0, le=86_400.0)
    max_concurrent_calls_per_principal: int = 64
    rate_limit_per_principal_per_s: float = 200.0
    rate_limit_burst: int = 400
    # Limits shared by every replica (docs/deployment.md): "local" counts per process; "redis"
    # also checks rate, concurrent calls and sessions per principal on the Redis at redis_url.
    # With Redis unreachable, "open" keeps serving on the per-process limits, "closed" refuses
    # calls (503 limits_unavailable); /health says which.
    limits_backend: Literal["local", "redis"] = "local"
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", max_length=2048,
                           pattern=r"^(redis|rediss|unix)://", json_schema_extra={"secret": True})
    limits_fail: Literal["open", "closed"] = "open"
    # Every replica of one gateway uses the same prefix; gateways sharing a Redis use different ones.
    limits_prefix: str = Field(default="northstar", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    redis_timeout_s: float = Field(default=0.5, ge=0.01, le=10.0)
    # A request head must arrive (and an idle keep-alive connection is closed) within this;
    # a request body that takes longer is answered 408.
    read_timeout_s: float = 30.0
    # The express lane (docs/architecture.md): MCP POSTs on plain HTTP/1.1 connections are read
    # and framed by the gateway itself instead of Hypercorn's per-request machinery. Off: every
    # request goes through Hypercorn (the same answers, slower).
    http_express: bool = True
    shutdown_grace_s: float = 5.0
    media_max_bytes: int = 8 * 1024 * 1024

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{(self.data_dir / 'northstar.db').as_posix()}"

    @property
    def resolved_secrets_key_file(self) -> Path:
        """Where the upstream secrets key lives (``secrets_key_file``, else ``<data_dir>/secrets.key``)."""
        return self.secrets_key_file or self.data_dir / "secrets.key"

    @property
    def admin_key_file(self) -> Path:
        """Where ``serve`` writes the bootstrap admin key on first start (0600)."""
        return self.data_dir / "admin.key"

    @property
    def oauth_enabled(self) -> bool:
        return bool(self.oauth_issuer and self.oauth_audience and self.oauth_jwks_url)

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

    @property
    def trust_identity_headers(self) -> bool:
        """Only when the operator asked for it: never inferred from the bind or the peer address
        (a same-host reverse proxy connects over loopback too)."""
        return self.auth_mode == "headers"
