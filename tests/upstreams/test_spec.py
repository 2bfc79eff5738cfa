"""The registration model: ranges, transports, secret references, the public view."""

from __future__ import annotations

from typing import Any

import pytest

from northstar.common.errors import ValidationFailed
from northstar.upstreams import UpstreamSpec, parse_spec

TOKEN = "tok-0123456789abcdef"


def body(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "tickets", "transport": "streamable_http", "url": "https://t.example/mcp",
                            "headers": {"Authorization": "Bearer {secret:token}"}, "secrets": {"token": TOKEN}}
    base.update(over)
    return base


def problems(raw: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        parse_spec(raw)
    errors: list[dict[str, str]] = caught.value.details["errors"]
    assert TOKEN not in str(caught.value.details) and TOKEN not in caught.value.message
    return errors


def test_a_valid_registration_and_its_defaults() -> None:
    spec = parse_spec(body())
    assert spec.max_concurrency == 8 and spec.call_timeout_s == 30.0 and spec.connect_timeout_s == 10.0
    assert spec.retry.attempts == 5 and spec.breaker.failure_threshold == 5
    assert spec.secret_values() == {"token": TOKEN}
    assert TOKEN not in repr(spec) and TOKEN not in str(spec)


def test_the_public_view_names_secrets_only() -> None:
    public = parse_spec(body()).public()
    assert public["secrets"] == ["token"] and public["headers"] == {"Authorization": "Bearer {secret:token}"}
    assert TOKEN not in str(public)


@pytest.mark.parametrize("name", ["", "Tickets", "a__b", "-x", "x-", "_x", "a" * 33, "a.b", "a b"])
def test_names_follow_the_tool_id_rules(name: str) -> None:
    assert problems(body(name=name))[0]["path"] == "/name"


@pytest.mark.parametrize("url", ["ftp://h/x", "file:///etc/passwd", "https://user:pw@h/mcp", "https:///mcp",
                                 "https://h/mcp#frag", "https://h:99999/mcp", "https://h/ mcp", "javascript:x"])
def test_urls_are_http_without_credentials(url: str) -> None:
    assert problems(body(url=url))


def test_unknown_and_misplaced_secret_references_are_refused() -> None:
    assert "unknown secret 'nope'" in problems(body(headers={"Authorization": "Bearer {secret:nope}"}))[0]["message"]
    stdio = {"name": "files", "transport": "stdio", "command": "files-mcp", "secrets": {"token": TOKEN}}
    msg = problems({**stdio, "args": ["--token={secret:token}"]})[0]["message"]
    assert "may not refer to a secret" in msg
    assert "malformed" in problems(body(headers={"X-A": "{secret:token"}))[0]["message"]
    ok = parse_spec({**stdio, "env": {"FILES_TOKEN": "{secret:token}"}})
    assert ok.env == {"FILES_TOKEN": "{secret:token}"}


def test_credentials_must_come_from_secrets() -> None:
    assert "credential" in problems(body(headers={"Authorization": "Bearer literal-token"}))[0]["message"]
    stdio = {"name": "files", "transport": "stdio", "command": "files-mcp"}
    assert "credential" in problems({**stdio, "env": {"GITHUB_TOKEN": "ghp_literal"}})[0]["message"]
    assert parse_spec({**stdio, "env": {"LOG_LEVEL": "debug"}}).env == {"LOG_LEVEL": "debug"}


def test_transport_fields_must_match_the_transport() -> None:
    assert "needs a command" in problems({"name": "x", "transport": "stdio"})[0]["message"]
    assert "needs a url" in problems({"name": "x", "transport": "sse"})[0]["message"]
    assert "command does not apply" in problems(body(command="x"))[0]["message"]
    stdio = {"name": "files", "transport": "stdio", "command": "files-mcp"}
    assert "headers do not apply" in problems({**stdio, "headers": {"X-A": "b"}})[0]["message"]
    assert problems({**stdio, "cwd": "relative/dir"})[0]["path"] == "/cwd"
    assert problems(body(transport="websocket"))[0]["path"] == "/transport"


@pytest.mark.parametrize("over", [
    {"max_concurrency": 0}, {"max_concurrency": 10_000}, {"call_timeout_s": 0}, {"call_timeout_s": 1e9},
    {"connect_timeout_s": -1}, {"max_result_bytes": 10}, {"retry": {"attempts": 0}},
    {"breaker": {"failure_threshold": 0}}, {"breaker": {"open_s": 1e9}}, {"retry": {"multiplier": 0.5}},
    {"secrets": {"token": "short"}}, {"secrets": {"bad name": TOKEN}}, {"headers": {"Host": "evil"}},
    {"headers": {"X-A": "a\r\nInjected: 1"}}, {"headers": {"bad header": "v"}}, {"unknown": 1},
    {"headers": {f"X-{n}": "v" for n in range(65)}},
])
def test_every_field_has_a_range(over: dict[str, Any]) -> None:
    assert problems(body(**over))


def test_not_an_object() -> None:
    assert problems([1, 2]) == [{"path": "", "message": "not an object"}]


def test_the_sandbox_target_replaces_the_real_one() -> None:
    http = parse_spec(body(sandbox_url="https://sandbox.t.example/mcp")).sandbox()
    assert http is not None and http.url == "https://sandbox.t.example/mcp" and http.secrets
    assert parse_spec(body()).sandbox() is None
    stdio = UpstreamSpec.model_validate({"name": "files", "transport": "stdio", "command": "files-mcp",
                                         "args": ["--root", "/srv"], "sandbox_command": "files-mcp-dry"})
    sandbox = stdio.sandbox()
    assert sandbox is not None and sandbox.command == "files-mcp-dry" and sandbox.args == ["--root", "/srv"]
