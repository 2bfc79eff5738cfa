"""Every command in docs/mcp_workbench/GUIDE_CONNECT_REAL_CLIENT.md, run as written.

The commands are read from the guide itself (``guide_command`` fails when one is no longer
there) and run through ``bash -c`` from a scratch directory with the venv's ``bin`` first on
PATH, as a reader with the venv activated would. Only the port (``8000`` becomes a free one),
the placeholder key (``nsk_...``) and the example paths of the JSON configurations are
substituted. ``test_every_guide_command_is_exercised`` keeps the guide and ``EXERCISED`` in
step: a command added to the guide without a test here fails it.

Node-based clients (mcp-remote, the MCP Inspector) run when node/npm are present and skip
with the reason otherwise.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.e2e.clients import error_of
from tests.harness import GatewayProcess

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "mcp_workbench" / "GUIDE_CONNECT_REAL_CLIENT.md"
VENV_BIN = Path(sys.executable).parent
NORTHSTAR = VENV_BIN / "northstar"
CACHE_ROOT = Path(os.environ.get("NORTHSTAR_INSPECTOR_CACHE")
                  or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "northstar-inspector")
INSPECTOR_VERSION = os.environ.get("NORTHSTAR_INSPECTOR_VERSION", "2.12.0")
START_TIMEOUT_S = 60.0
pytestmark = pytest.mark.slow
CREATE_ARGS = {"name": "note.txt", "mime_type": "text/plain", "content_text": "hi"}
DENIAL_DETAILS = {"scope": "media.write", "firearm": "firearm.media.write"}

INSPECTOR_HTTP = ('npx @modelcontextprotocol/inspector --cli http://127.0.0.1:8000/mcp --transport http '
                  '--header "Authorization: Bearer $KEY"')

# Every shell command of the guide, and what runs it ("script": repro_real_client.sh runs the
# same invocation against its own gateway; the test named here runs the guide's text).
EXERCISED = {
    ". .venv/bin/activate": "test_activate_puts_northstar_on_path",
    "northstar serve --host 127.0.0.1 --port 8000 --data-dir ./data": "test_loopback_gateway",
    "curl -s http://127.0.0.1:8000/health": "test_loopback_gateway",
    "export ADMIN_KEY=$(cat data/admin.key)": "test_loopback_gateway",
    "northstar keys create --tenant acme --user alice --data-dir ./data": "test_loopback_gateway",
    "export KEY=nsk_...": "test_loopback_gateway",
    "curl -s -X POST http://127.0.0.1:8000/v1/tools/echo.ping/call -H \"Authorization: Bearer $KEY\"":
        "test_loopback_gateway",
    "curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8000/v1/tools": "test_api_key_mode",
    "curl -s -o /dev/null -w '%{http_code}\\n' -H \"Authorization: Bearer $KEY\"": "test_api_key_mode",
    "northstar keys create --tenant acme --user ops --admin --data-dir ./data": "test_api_key_mode",
    "curl -s -X POST http://127.0.0.1:8000/v1/keys -H \"Authorization: Bearer $ADMIN_KEY\"": "test_api_key_mode",
    "northstar serve --auth-mode headers --host 127.0.0.1 --port 8000 --data-dir ./data": "test_headers_mode",
    "curl -s -X POST http://127.0.0.1:8000/v1/tools/echo.ping/call -H 'X-Tenant-Id: acme'": "test_headers_mode",
    "northstar stdio --tenant acme --user alice --data-dir ./data": "test_loopback_gateway",
    "northstar firearms grant acme alice firearm.media.write --data-dir ./data": "test_claude_desktop_config",
    "northstar firearms list --data-dir ./data": "test_api_key_mode",
    "curl -s -X POST http://127.0.0.1:8000/v1/firearms/grants -H \"Authorization: Bearer $ADMIN_KEY\"":
        "test_loopback_gateway",
    "NORTHSTAR_AUTH_MODE=api_key NORTHSTAR_ALLOWED_HOSTS='[\"mcp.example.com\", \"127.0.0.1:*\"]'":
        "test_public_bind_host_and_origin_rules",
    "npx @modelcontextprotocol/inspector --transport http --server-url": "test_inspector_web_ui_starts",
    INSPECTOR_HTTP + " --method tools/list": "test_inspector_cli_with_api_key",
    INSPECTOR_HTTP + " --method tools/call": "script",
    INSPECTOR_HTTP + " --protocol-era modern": "script",
    "npx @modelcontextprotocol/inspector --cli http://127.0.0.1:8000/sse --transport sse": "script",
    "npx @modelcontextprotocol/inspector --cli --transport stdio": "script",
}


# -- reading the guide --------------------------------------------------------------------------
def guide_text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def fenced_blocks(lang: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^ *```(\w*)\n(.*?)^ *```", guide_text(), re.S | re.M)
            if m.group(1) == lang]


def shell_commands() -> list[str]:
    """Logical command lines of the guide's ``sh`` blocks (continuations joined)."""
    commands = []
    for block in fenced_blocks("sh"):
        text = re.sub(r"\\\n\s*", "", block)
        commands += [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return commands


def guide_command(prefix: str) -> str:
    """The one guide command that starts with ``prefix`` (whitespace-normalised)."""
    found = [c for c in shell_commands() if c.startswith(" ".join(prefix.split()))]
    assert len(found) == 1, f"the guide has {len(found)} commands starting with {prefix!r}"
    return found[0]


def json_config(server_name: str) -> dict[str, Any]:
    for block in fenced_blocks("json"):
        doc = json.loads(block)
        if server_name in doc.get("mcpServers", {}):
            return dict(doc["mcpServers"][server_name])
    raise AssertionError(f"no mcpServers.{server_name} configuration in the guide")


def test_every_guide_command_is_exercised() -> None:
    commands = shell_commands()
    unexercised = [c for c in commands if not any(c.startswith(p) for p in EXERCISED)]
    assert not unexercised, f"guide commands with no test: {unexercised}"
    stale = [p for p in EXERCISED if not any(c.startswith(p) for c in commands)]
    assert not stale, f"EXERCISED lists commands the guide no longer has: {stale}"
    assert json_config("northstar") and json_config("northstar-remote")


# -- running commands ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def with_port(command: str, port: int) -> str:
    return command.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("--port 8000", f"--port {port}")


def sh(command: str, cwd: Path, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=clean_env(**env), capture_output=True,
                          text=True, timeout=timeout, check=False)


async def ash(command: str, cwd: Path, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """``sh`` off the event loop (while SDK clients in this loop stay served)."""
    return await trio.to_thread.run_sync(lambda: sh(command, cwd, timeout, **env))


# Skips happen in sync fixtures: pytest-trio drops the reason of a skip raised in an async test
# or fixture ("Skipped" with no why), so the async tests below ask for these instead.
@pytest.fixture
def curl() -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the guide's curl commands cannot run")


@dataclass
class Served:
    """A gateway started from a guide command line by bash in a new session; stopped with SIGTERM."""

    command: str
    cwd: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self.log_file = (self.cwd / f"gateway-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(["bash", "-c", with_port(self.command, self.port)], cwd=self.cwd,
                                     env=clean_env(**self.env), stdout=subprocess.DEVNULL, stderr=self.log_file,
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited:\n{self.log()}"
            try:
                if httpx2.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx2.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gateway did not answer /health:\n{self.log()}")

    def signal(self, sig: int) -> None:
        """To the process group the gateway was started in (bash and the gateway)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def log(self) -> str:
        return (self.cwd / f"gateway-{self.port}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


@contextlib.contextmanager
def served(command: str, cwd: Path, port: int | None = None, **env: str) -> Iterator[Served]:
    gw = Served(command, cwd, port or free_port(), env)
    try:
        yield gw.start()
    finally:
        gw.stop()


@contextlib.asynccontextmanager
async def http_client(url: str, headers: dict[str, str], mode: str = "legacy") -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, Client(
        streamable_http_client(f"{url}/mcp", http_client=http), mode=mode, cache=None
    ) as client:
        yield client


async def create_until_allowed(client: Client, within_s: float = 5.0) -> dict[str, Any]:
    """Retry create_asset until a freshly made grant is seen (bounded)."""
    with trio.fail_after(within_s):
        while True:
            result = await client.call_tool("media_v2__create_asset", CREATE_ARGS)
            if not result.is_error:
                return dict(result.structured_content or {})
            assert error_of(result)["code"] == "firearm_required"
            await trio.sleep(0.2)


def assert_denied(result: Any) -> None:
    assert result.is_error
    err = error_of(result)
    assert err["code"] == "firearm_required"
    assert err["details"] == DENIAL_DETAILS
    # The shape the guide shows for a denial.
    shown = json.loads(next(b for b in fenced_blocks("json") if "firearm_required" in b))
    assert set(shown["error"]) <= set(err)
    assert shown["error"]["message"] == err["message"]


# -- the tests ------------------------------------------------------------------------------------
def test_activate_puts_northstar_on_path() -> None:
    if not (REPO / ".venv" / "bin" / "activate").exists():
        pytest.skip("no .venv in this checkout (the guide assumes `make install`)")
    done = sh(guide_command(". .venv/bin/activate") + " && command -v northstar", REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(REPO / ".venv" / "bin" / "northstar")


def create_key(prefix: str, cwd: Path) -> str:
    """Run the guide's ``northstar keys create ...`` line; the printed key."""
    done = sh(guide_command(prefix), cwd)
    assert done.returncode == 0, done.stderr
    key: str = json.loads(done.stdout)["key"]
    return key


async def test_loopback_gateway(tmp_path: Path, curl: None) -> None:
    """serve (the default: a credential on every request), /health, the bootstrap admin key file,
    alice's key and a call with it, stdio, and the admin's REST grant with the key file."""
    with served(guide_command("northstar serve --host 127.0.0.1"), tmp_path) as gw:
        health = json.loads(sh(with_port(guide_command("curl -s http://127.0.0.1:8000/health"), gw.port),
                               tmp_path).stdout)
        assert health["status"] == "ok"
        assert gw.log().count("admin key: data/admin.key") == 1  # as the guide quotes it, once
        key = create_key("northstar keys create --tenant acme --user alice", tmp_path)
        export = guide_command("export KEY=nsk_...").replace("nsk_...", key, 1)
        echo = sh(export + "\n" + with_port(guide_command(
            'curl -s -X POST http://127.0.0.1:8000/v1/tools/echo.ping/call -H "Authorization: Bearer $KEY"'),
            gw.port), tmp_path)
        out = json.loads(echo.stdout)
        assert out["output"]["pong"] is True and out["output"]["message"] == "hi", out
        assert out["audit_seq"] == 1  # alice's first record
        # stdio, as the guide writes it, against the same ./data the gateway uses
        params = StdioServerParameters(command="bash", args=["-c", "exec " + guide_command("northstar stdio")],
                                       env=clean_env(NORTHSTAR_LOG_LEVEL="WARNING"), cwd=str(tmp_path))
        async with Client(params, mode="legacy", cache=None) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            create = tools["media_v2__create_asset"]
            assert create.description.endswith("[requires firearm firearm.media.write; not granted to you]")
            assert (create.meta or {})["northstar/callable"] is False
            assert_denied(await client.call_tool("media_v2__create_asset", CREATE_ARGS))
            admin = guide_command("export ADMIN_KEY=$(cat data/admin.key)") + "\n" + with_port(guide_command(
                'curl -s -X POST http://127.0.0.1:8000/v1/firearms/grants -H "Authorization: Bearer $ADMIN_KEY"'),
                gw.port)
            granted = await ash(admin, tmp_path)
            assert json.loads(granted.stdout)["firearm"] == "firearm.media.write", granted.stdout
            created = await create_until_allowed(client)  # the running stdio process sees it
            assert created["asset_id"]


def test_headers_mode(tmp_path: Path, curl: None) -> None:
    """The explicit header mode: announced at start, a header names a user, never an admin."""
    with served(guide_command("northstar serve --auth-mode headers"), tmp_path) as gw:
        assert "auth_mode=headers" in gw.log() and "anyone can act as any user" in gw.log()
        echo = json.loads(sh(with_port(guide_command(
            "curl -s -X POST http://127.0.0.1:8000/v1/tools/echo.ping/call -H 'X-Tenant-Id: acme'"), gw.port),
            tmp_path).stdout)
        assert echo["output"]["pong"] is True and echo["output"]["message"] == "hi", echo
        spoofed = httpx2.post(f"{gw.url}/v1/firearms/grants", headers={"X-User-Id": "admin"},
                              json={"tenant": "acme", "user": "alice", "firearm": "firearm.media.write"})
        assert spoofed.status_code == 403 and spoofed.json()["error"]["code"] == "admin_required"
        admin_key = (tmp_path / "data" / "admin.key").read_text().strip()
        ok = httpx2.post(f"{gw.url}/v1/firearms/grants", headers={"Authorization": f"Bearer {admin_key}"},
                         json={"tenant": "acme", "user": "alice", "firearm": "firearm.media.write"})
        assert ok.status_code == 201, ok.text


@dataclass
class ApiGateway:
    """One API-key-mode gateway for the module, its directory and the guide's two keys."""

    gw: Served
    cwd: Path
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.gw.url


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiGateway]:
    cwd = tmp_path_factory.mktemp("api")
    keys: dict[str, str] = {}
    for user, prefix in (("alice", "northstar keys create --tenant acme --user alice"),
                         ("ops", "northstar keys create --tenant acme --user ops --admin")):
        done = sh(guide_command(prefix), cwd)
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        assert created["key"].startswith("nsk_") and created["tenant"] == "acme" and created["user"] == user
        assert created["admin"] is (user == "ops") and created["provenance"] == "cli"
        keys[user] = created["key"]
    with served(guide_command("northstar serve --host 127.0.0.1"), cwd) as gw:
        yield ApiGateway(gw, cwd, keys)


async def test_api_key_mode(api: ApiGateway, curl: None) -> None:
    key, admin_key, gw, tmp_path = api.keys["alice"], api.keys["ops"], api.gw, api.cwd
    no_key = sh(with_port(guide_command("curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8000/v1/tools"),
                          gw.port), tmp_path)
    assert no_key.stdout.strip() == "401"
    export = guide_command("export KEY=nsk_...").replace("nsk_...", key, 1)
    with_key = sh(export + "\n" + with_port(guide_command("curl -s -o /dev/null -w '%{http_code}\\n' -H "
                                                          "\"Authorization: Bearer"), gw.port), tmp_path)
    assert with_key.stdout.strip() == "200"
    # the claims around them
    assert httpx2.get(f"{gw.url}/health").status_code == 200
    bad = httpx2.get(f"{gw.url}/v1/tools", headers={"Authorization": "Bearer nsk_0123456789abcdef_" + "x" * 43})
    assert bad.status_code == 401 and bad.json()["error"]["message"] == "invalid or revoked API key"
    mismatch = httpx2.get(f"{gw.url}/v1/tools", headers={"Authorization": f"Bearer {key}", "X-User-Id": "ops"})
    assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == "identity_mismatch"
    spoofed = httpx2.post(f"{gw.url}/mcp", headers={"X-User-Id": "admin"},
                          json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert spoofed.status_code == 401
    assert "API key is required" in spoofed.json()["error"]["message"]
    no_oauth = httpx2.get(f"{gw.url}/.well-known/oauth-protected-resource",
                          headers={"Authorization": f"Bearer {key}"})
    assert no_oauth.status_code == 404
    # the bootstrap admin key mints a key over REST, as the guide shows
    minted = sh(guide_command("export ADMIN_KEY=$(cat data/admin.key)") + "\n" + with_port(guide_command(
        'curl -s -X POST http://127.0.0.1:8000/v1/keys -H "Authorization: Bearer $ADMIN_KEY"'), gw.port), tmp_path)
    bob = json.loads(minted.stdout)
    assert (bob["tenant"], bob["user"], bob["admin"], bob["provenance"]) == ("acme", "bob", False, "api_key")
    assert httpx2.get(f"{gw.url}/v1/tools", headers={"Authorization": f"Bearer {bob['key']}"}).status_code == 200

    auth = {"Authorization": f"Bearer {key}"}
    async with http_client(gw.url, auth) as client:
        assert_denied(await client.call_tool("media_v2__create_asset", CREATE_ARGS))
        granted = await ash(with_port(guide_command("curl -s -X POST http://127.0.0.1:8000/v1/firearms/grants "
                                                    "-H \"Authorization: Bearer $ADMIN_KEY\""), gw.port),
                            tmp_path, ADMIN_KEY=admin_key)
        assert json.loads(granted.stdout)["user"] == "alice", granted.stdout
        created = await client.call_tool("media_v2__create_asset", CREATE_ARGS)  # REST: at once
        assert not created.is_error, created.structured_content
    listed = json.loads(sh(guide_command("northstar firearms list"), tmp_path).stdout)
    assert any(g["tenant"] == "acme" and g["user"] == "alice" for g in listed["grants"])
    # keys list / revoke, as the guide names them (on a key of its own)
    spare = json.loads(sh("northstar keys create --tenant acme --user carol --data-dir ./data", tmp_path).stdout)
    assert spare["key_id"] in sh("northstar keys list --data-dir ./data", tmp_path).stdout
    spare_auth = {"Authorization": f"Bearer {spare['key']}"}
    assert httpx2.get(f"{gw.url}/v1/tools", headers=spare_auth).status_code == 200
    assert sh(f"northstar keys revoke {spare['key_id']} --data-dir ./data", tmp_path).returncode == 0
    with trio.fail_after(10):
        while httpx2.get(f"{gw.url}/v1/tools", headers=spare_auth).status_code != 401:
            await trio.sleep(0.2)


def test_the_guide_describes_oauth() -> None:
    """OAuth exists (northstar/policy/oauth.py): the guide must say how to configure it."""
    assert (REPO / "northstar" / "policy" / "oauth.py").exists()
    text = guide_text()
    assert "OAuth is not implemented" not in text
    for setting in ("NORTHSTAR_OAUTH_ISSUER", "NORTHSTAR_OAUTH_AUDIENCE", "NORTHSTAR_OAUTH_JWKS_URL",
                    "/.well-known/oauth-protected-resource", "resource_metadata"):
        assert setting in text, setting


async def test_claude_desktop_config(tmp_path: Path) -> None:
    """The guide's claude_desktop_config.json entry, launched as Claude Desktop would."""
    entry = json_config("northstar")
    text = json.dumps(entry).replace("/home/you/northstar/.venv/bin/northstar", str(NORTHSTAR))
    entry = json.loads(text.replace("/home/you/northstar/data", str(tmp_path / "data")))
    assert Path(entry["command"]).is_absolute() and entry["command"] == str(NORTHSTAR)
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry.get("env"),
                                   cwd=str(Path.home()))  # Claude Desktop does not start in the checkout
    async with Client(params, mode="legacy", cache=None) as client:
        assert client.server_info is not None and client.server_info.name == "northstar"
        names = [t.name for t in (await client.list_tools()).tools]
        assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in names), names
        echo = await client.call_tool("echo__ping", {"message": "from claude"})
        assert echo.structured_content["message"] == "from claude"
        assert_denied(await client.call_tool("media_v2__create_asset", CREATE_ARGS))
        # The guide's CLI grant, while "Claude Desktop" keeps running: no restart needed.
        grant = await ash(guide_command("northstar firearms grant acme alice"), tmp_path)
        assert grant.returncode == 0, grant.stderr
        created = await create_until_allowed(client, within_s=5.0)
        got = await client.call_tool("media_v2__get_asset", {"asset_id": created["asset_id"]})
        assert got.structured_content["content_text"] == "hi"


def npm_install(package: str, into: Path) -> Path:
    """Install an npm package into the shared cache once; skip when that is impossible."""
    stamp = into / ".northstar-installed"
    if not stamp.exists():
        if shutil.which("npm") is None:
            pytest.skip(f"npm is not installed, so {package} cannot run")
        into.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "install", "--prefix", str(into), "--no-audit", "--no-fund",
                               "--loglevel=error", package], cwd=into, capture_output=True, text=True,
                              timeout=240, check=False)
        if done.returncode != 0:
            pytest.skip(f"npm install {package} failed: {done.stderr[-300:]}")
        stamp.touch()
    return into


@pytest.fixture
def mcp_remote() -> Path:
    """Where mcp-remote is installed (skips, with the reason, when it cannot be)."""
    if shutil.which("npx") is None:
        pytest.skip("npx is not installed (mcp-remote needs Node.js)")
    return npm_install("mcp-remote", CACHE_ROOT / "mcp-remote")


async def test_mcp_remote_config_reaches_an_api_key_gateway(tmp_path: Path, api: ApiGateway, mcp_remote: Path) -> None:
    """The guide's mcp-remote entry (npx -y mcp-remote URL --header Authorization:${...})."""
    where = mcp_remote
    gw, keys = api.gw, api.keys
    entry = json_config("northstar-remote")
    args = [a.replace("https://mcp.example.com/mcp", f"{gw.url}/mcp") for a in entry["args"]]
    env = {k: v.replace("nsk_...", keys["alice"]) for k, v in entry["env"].items()}
    env["MCP_REMOTE_CONFIG_DIR"] = str(tmp_path / "mcp-auth")
    assert entry["command"] == "npx" and args[:2] == ["-y", "mcp-remote"]
    params = StdioServerParameters(command=entry["command"], args=args, env=env, cwd=str(where))
    with trio.fail_after(90):
        async with Client(params, mode="legacy", cache=None) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert "echo__ping" in names and "media_v2__create_asset" in names
            echo = await client.call_tool("echo__ping", {"message": "via mcp-remote"})
            assert echo.structured_content["message"] == "via mcp-remote"


async def test_public_bind_host_and_origin_rules(tmp_path: Path) -> None:
    """The ChatGPT section's serve command (0.0.0.0, api_key, allowed hosts) and the
    troubleshooting claims about 421, 403 and a non-JSON NORTHSTAR_ALLOWED_HOSTS."""
    command = guide_command("NORTHSTAR_AUTH_MODE=api_key NORTHSTAR_ALLOWED_HOSTS=")
    assert "--host 0.0.0.0" in command
    key = json.loads(sh("northstar keys create --tenant acme --user alice --data-dir ./data", tmp_path).stdout)["key"]
    auth = {"Authorization": f"Bearer {key}"}
    with served(command, tmp_path, NORTHSTAR_ALLOWED_ORIGINS='["https://chatgpt.com"]') as gw:
        public = {**auth, "Host": "mcp.example.com"}
        assert httpx2.get(f"{gw.url}/v1/tools", headers=public).status_code == 200
        assert httpx2.get(f"{gw.url}/v1/tools", headers={"Host": "mcp.example.com"}).status_code == 401
        assert httpx2.get(f"{gw.url}/health").status_code == 200  # Host 127.0.0.1:PORT, from "127.0.0.1:*"
        wrong = httpx2.get(f"{gw.url}/health", headers={"Host": f"localhost:{gw.port}"})
        assert wrong.status_code == 421 and wrong.json()["error"]["message"] == "Invalid Host header"
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        evil = httpx2.post(f"{gw.url}/mcp", headers={**public, "Origin": "https://evil.example"}, json=ping)
        assert evil.status_code == 403 and evil.json()["error"]["message"] == "Invalid Origin header"
        allowed = httpx2.post(f"{gw.url}/mcp", headers={**public, "Origin": "https://chatgpt.com"}, json=ping)
        assert allowed.status_code not in (401, 403, 421), allowed.text
        async with http_client(gw.url, public) as client:
            assert "echo__ping" in [t.name for t in (await client.list_tools()).tools]
    # The list may also be written comma-separated, as the guide says.
    with GatewayProcess(tmp_path / "comma", env={"NORTHSTAR_ALLOWED_HOSTS": "mcp.example.com, 127.0.0.1:*"}) as gw2:
        named = httpx2.get(f"{gw2.url}/health", headers={"Host": "mcp.example.com"})
        assert named.status_code == 200, named.text


@contextlib.contextmanager
def nginx_in_front(cwd: Path, gateway_port: int, nginx: str) -> Iterator[str]:
    """The guide's nginx server block (only its port and certificate paths changed), with a
    throwaway self-signed certificate; yields its https URL."""
    cert, key_file = cwd / "cert.pem", cwd / "key.pem"
    made = sh(f"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=mcp.example.com "
              f"-keyout {key_file} -out {cert}", cwd)
    assert made.returncode == 0, made.stderr
    tls_port = free_port()
    (block,) = fenced_blocks("nginx")
    server = (block.replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
              .replace("/etc/letsencrypt/live/mcp.example.com/fullchain.pem", str(cert))
              .replace("/etc/letsencrypt/live/mcp.example.com/privkey.pem", str(key_file))
              .replace("127.0.0.1:8000", f"127.0.0.1:{gateway_port}"))
    temp = "".join(f"{name}_temp_path {cwd}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = cwd / "nginx.conf"
    conf.write_text(f"daemon off; master_process off; pid {cwd}/nginx.pid; error_log {cwd}/nginx-error.log;"
                    f"events {{}} http {{ access_log off; {temp}\n{server}\n}}\n")
    proxy = subprocess.Popen([nginx, "-p", str(cwd), "-c", str(conf)], stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{tls_port}"
    try:
        deadline = time.monotonic() + 20
        while not port_open(tls_port):
            assert proxy.poll() is None, (cwd / "nginx-error.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "nginx did not listen within 20 s"
            time.sleep(0.1)
        yield url
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None or shutil.which("openssl") is None:
        pytest.skip("nginx or openssl is not installed: the guide's TLS snippet cannot be tried")
    return found


async def test_nginx_snippet_terminates_tls_in_front_of_the_gateway(tmp_path: Path, nginx: str) -> None:
    key = json.loads(sh("northstar keys create --tenant acme --user alice --data-dir ./data", tmp_path).stdout)["key"]
    public = {"Host": "mcp.example.com", "Authorization": f"Bearer {key}"}
    with served(guide_command("NORTHSTAR_AUTH_MODE=api_key NORTHSTAR_ALLOWED_HOSTS="), tmp_path) as gw, \
            nginx_in_front(tmp_path, gw.port, nginx) as url:
        assert httpx2.get(f"{url}/health", headers=public, verify=False).status_code == 200
        assert httpx2.get(f"{url}/v1/tools", headers={"Host": "mcp.example.com"}, verify=False).status_code == 401
        async with httpx2.AsyncClient(headers=public, verify=False, timeout=30) as http, Client(
            streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy", cache=None
        ) as client:  # the 2025 era answers tools/call as an event stream: unbuffered through nginx
            assert "echo__ping" in [t.name for t in (await client.list_tools()).tools]
            echo = await client.call_tool("echo__ping", {"message": "through nginx"})
            assert echo.structured_content["message"] == "through nginx"


async def test_session_not_found_after_restart(tmp_path: Path) -> None:
    """A 2025-era session dies with the process (404; initializing again cures it); the
    stateless 2026-07-28 era does not notice the restart."""
    command = guide_command("northstar serve --host 127.0.0.1")
    headers = {"Authorization": f"Bearer {create_key('northstar keys create --tenant acme --user alice', tmp_path)}"}
    bob = json.loads(sh("northstar keys create --tenant acme --user bob --data-dir ./data", tmp_path).stdout)["key"]
    accept = {"Accept": "application/json, text/event-stream"}
    with served(command, tmp_path) as gw:
        init = httpx2.post(f"{gw.url}/mcp", headers={**headers, **accept}, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "guide", "version": "0"}}})
        session_id = init.headers["mcp-session-id"]
        other = httpx2.post(f"{gw.url}/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={
            "Authorization": f"Bearer {bob}", **accept, "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": "2025-11-25"})
        assert other.status_code == 404  # a session belongs to the principal that opened it
        async with http_client(gw.url, headers) as legacy, http_client(gw.url, headers, mode="auto") as modern:
            assert modern.protocol_version == "2026-07-28"
            await trio.to_thread.run_sync(gw.stop)
            await trio.to_thread.run_sync(gw.start)  # the same port, a new process
            stale = httpx2.post(f"{gw.url}/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers={
                **headers, **accept, "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"})
            assert stale.status_code == 404 and stale.json()["error"]["message"] == "Session not found"
            with pytest.raises(MCPError):
                await legacy.call_tool("echo__ping", {"message": "old session"})
            again = await modern.call_tool("echo__ping", {"message": "stateless"})
            assert again.structured_content["message"] == "stateless"
        async with http_client(gw.url, headers) as fresh:
            assert (await fresh.call_tool("echo__ping", {"message": "new session"})).structured_content["pong"]


# -- the MCP Inspector (installed by repro_real_client.sh) -----------------------------------------
@dataclass
class Inspector:
    node: str
    launcher: str

    def command(self, guide_line: str, port: int) -> str:
        prefix = "npx @modelcontextprotocol/inspector"
        assert guide_line.startswith(prefix)
        return f"{self.node} {self.launcher}" + with_port(guide_line, port)[len(prefix):]


@pytest.fixture
def inspector() -> Inspector:
    return cached_inspector()


def cached_inspector() -> Inspector:
    base = CACHE_ROOT / INSPECTOR_VERSION / "node_modules"
    launcher = base / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
    node = base / ".bin" / "node"
    if not launcher.exists() or not node.exists():
        pytest.skip(f"the MCP Inspector is not installed under {CACHE_ROOT}/{INSPECTOR_VERSION} "
                    "(tests/real_client/repro_real_client.sh installs it)")
    return Inspector(str(node), str(launcher))


async def test_inspector_cli_with_api_key(tmp_path: Path, api: ApiGateway, inspector: Inspector) -> None:
    line = guide_command(INSPECTOR_HTTP + " --method tools/list")
    gw, keys = api.gw, api.keys
    home = tmp_path / "home"
    home.mkdir()
    ok = await ash(inspector.command(line, gw.port) + " --format json -q", tmp_path, 90,
                   KEY=keys["alice"], HOME=str(home))
    assert ok.returncode == 0, ok.stderr
    assert "echo__ping" in [t["name"] for t in json.loads(ok.stdout)["result"]["tools"]]
    refused = await ash(inspector.command(line, gw.port) + " --format json -q", tmp_path, 90,
                        KEY="nsk_0123456789abcdef_" + "x" * 43, HOME=str(home))
    assert refused.returncode != 0


def test_inspector_web_ui_starts(tmp_path: Path, inspector: Inspector) -> None:
    """The guide's web UI command starts and serves its page (the browser part is manual)."""
    line = guide_command("npx @modelcontextprotocol/inspector --transport http --server-url")
    env = clean_env(HOME=str(tmp_path), KEY="nsk_0123456789abcdef_" + "k" * 43, CLIENT_PORT=str(free_port()),
                    MCP_SANDBOX_PORT=str(free_port()),
                    MCP_APP_ORIGIN_PORT=str(free_port()), MCP_AUTO_OPEN_ENABLED="false",
                    MCP_INSPECTOR_SECRET_STORE="memory")
    proc = subprocess.Popen(["bash", "-c", "exec " + inspector.command(line, 8000)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.stdout is not None
        url, deadline = None, time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line_out = proc.stdout.readline().decode(errors="replace")
            assert line_out or proc.poll() is None, "the Inspector exited before serving"
            found = re.search(r"(http://127\.0\.0\.1:\d+\?MCP_INSPECTOR_API_TOKEN=\w+)", line_out)
            url = found.group(1) if found else None
        assert url is not None, "no 'up and running at' URL within 60 s"
        assert url.startswith(f"http://127.0.0.1:{env['CLIENT_PORT']}?")
        assert httpx2.get(url, timeout=10).status_code == 200
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# -- the real-client driver is not northstar code -------------------------------------------------
def test_real_client_driver_does_not_import_northstar() -> None:
    for path in (REPO / "tests" / "real_client").glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"northstar", "actors", "tests"}, f"{path.name} imports {imported}"
