"""Gateway settings, read from ``NORTHSTAR_*`` environment variables (and CLI flags).

Every limit the gateway enforces is a setting here; ``docs/configuration.md`` lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NORTHSTAR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    store_url: str | None = Field(
        default=None, description="sqlite:///path.db or postgresql://...; default: SQLite under data_dir"
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Authentication: "auto" trusts identity headers only on loopback binds.
    auth_mode: Literal["auto", "headers", "api_key"] = "auto"
    # In header-trust mode, these users are admins (may change policy).
    admin_users: list[str] = Field(default_factory=lambda: ["admin"])
    # DNS-rebinding protection (Host / Origin) for the MCP endpoints and REST.
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)

    # The diagnostics tool (sleep, crash) for fault drills; never on in production.
    enable_diagnostics: bool = False
    # Answer well-formed tools/call requests without the SDK's generic dispatch (see fastpath.py).
    fast_path: bool = True
    # tools/list: "mark" annotates operations the caller may not call, "hide" drops them.
    unauthorized_tools: Literal["mark", "hide", "show"] = "mark"

    # Limits.
    max_body_bytes: int = 4 * 1024 * 1024
    max_sessions: int = 10_000
    max_sessions_per_principal: int = 100
    max_sse_streams: int = 1_000
    max_sse_streams_per_principal: int = 20
    session_idle_timeout_s: float = 1800.0
    sse_send_timeout_s: float = 10.0
    sse_keepalive_s: float = 15.0
    tool_timeout_s: float = 30.0
    tool_timeout_max_s: float = 120.0
    max_concurrent_calls_per_principal: int = 64
    rate_limit_per_principal_per_s: float = 200.0
    rate_limit_burst: int = 400
    read_timeout_s: float = 30.0
    shutdown_grace_s: float = 5.0
    media_max_bytes: int = 8 * 1024 * 1024

    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"sqlite:///{(self.data_dir / 'northstar.db').as_posix()}"

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

    @property
    def trust_identity_headers(self) -> bool:
        if self.auth_mode == "headers":
            return True
        if self.auth_mode == "api_key":
            return False
        return self.is_loopback
