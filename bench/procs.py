"""Processes for the suite: CPU pinning, free ports, servers started and always stopped, tools.

Servers run on :data:`SERVER_CORE`, the load generator (and this orchestrator) on
:data:`LOAD_CORE`, so the two never compete for a core. A server's stderr goes to a file in
its temp directory (nothing to drain, nothing to block on) and is quoted when it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SERVER_CORE = 0
LOAD_CORE = 1
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
PY = sys.executable

#: The gateway's per-principal rate limit (default 200/s) would cap a single-principal load at
#: 200 calls/s; the limiter still runs on every call, it is only set high enough never to refuse.
#: Authentication is the default deployment's: ``api_key`` mode, every request carrying a key
#: minted by ``northstar keys create`` (:meth:`Gateway.caller_headers`).
GATEWAY_ENV = {
    "NORTHSTAR_RATE_LIMIT_PER_PRINCIPAL_PER_S": "1000000000",
    "NORTHSTAR_RATE_LIMIT_BURST": "1000000000",
    "NORTHSTAR_LOG_LEVEL": "INFO",
}


# -- pinning --------------------------------------------------------------------------------
def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pinned(core: int | None, cmd: Sequence[str]) -> list[str]:
    """``cmd`` run on one core through ``taskset`` (unchanged when ``core`` is None)."""
    return list(cmd) if core is None else ["taskset", "-c", str(core), *cmd]


def pin_self(core: int = LOAD_CORE) -> None:
    """Keep the orchestrator off the servers' core (its children re-pin themselves)."""
    if hasattr(os, "sched_setaffinity") and cores() > core:
        os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# -- servers --------------------------------------------------------------------------------
class ServerError(RuntimeError):
    pass


class Server:
    """One server subprocess on a loopback port; ``url`` is its base URL once started."""

    def __init__(self, name: str, cmd: Sequence[str], *, port: int, workdir: Path,
                 env: dict[str, str] | None = None, core: int | None = SERVER_CORE) -> None:
        self.name = name
        self.port = port
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{name}.stderr.log"
        self._cmd = pinned(core, cmd)
        self._env = clean_env(env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self._cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log, env=self._env, cwd=str(Path.cwd()))
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the port accepts a connection; raises with the server's log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise ServerError(f"{self.name} did not listen on {self.port} in {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu_s(self) -> float:
        """CPU time (user + system) the server process has used so far, from /proc/<pid>/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        """Resident set size from /proc/<pid>/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise ServerError(f"no VmRSS for {self.name}")


class Gateway(Server):
    """A northstar gateway; :meth:`caller_headers` is how the bench's load identifies itself."""

    def __init__(self, name: str, cmd: Sequence[str], *, port: int, workdir: Path, data_dir: Path,
                 store_url: str | None = None, env: dict[str, str] | None = None,
                 core: int | None = SERVER_CORE) -> None:
        super().__init__(name, cmd, port=port, workdir=workdir, env=env, core=core)
        self.data_dir = data_dir
        self.store_url = store_url
        self._caller: dict[str, str] | None = None

    @property
    def headers_mode(self) -> bool:
        return self._env.get("NORTHSTAR_AUTH_MODE") == "headers"

    def mint_key(self, tenant: str = "bench", user: str = "bench", *, admin: bool = False) -> str:
        """An API key minted on this gateway's store by the CLI, as an operator does."""
        cmd = [PY, "-m", "northstar", "keys", "create", "--tenant", tenant, "--user", user,
               "--data-dir", str(self.data_dir), *(["--admin"] if admin else []),
               *(["--store-url", self.store_url] if self.store_url else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=self._env)
        if done.returncode != 0:
            raise ServerError(f"northstar keys create failed ({done.returncode}):\n{done.stderr[-2000:]}")
        key: str = json.loads(done.stdout)["key"]
        return key

    def caller_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <key>`` for one caller (minted once, after start); nothing in
        the explicit headers mode (its default principal)."""
        if self._caller is None:
            self._caller = {} if self.headers_mode else {"Authorization": f"Bearer {self.mint_key()}"}
        return dict(self._caller)

    def admin_headers(self) -> dict[str, str]:
        """The bootstrap admin key the gateway wrote to its data dir on first start."""
        return {"Authorization": f"Bearer {(self.data_dir / 'admin.key').read_text('ascii').strip()}"}


def gateway(workdir: Path, *, store_url: str | None = None, name: str = "gateway",
            core: int | None = SERVER_CORE, env: dict[str, str] | None = None) -> Gateway:
    """A gateway with the bench's settings (:data:`GATEWAY_ENV`, then ``env``)."""
    port = free_port()
    data = workdir / f"{name}-data"
    cmd = [PY, "-m", "northstar", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)]
    if store_url:
        cmd += ["--store-url", store_url]
    return Gateway(name, cmd, port=port, workdir=workdir, data_dir=data, store_url=store_url,
                   env={**GATEWAY_ENV, **(env or {})}, core=core)


def auth_for(server: Server) -> dict[str, str]:
    """What a request to ``server`` must carry to be let in: a gateway's caller key, else nothing."""
    return server.caller_headers() if isinstance(server, Gateway) else {}


def baseline(workdir: Path, *, stateless: bool = False, json_response: bool = True,
             core: int | None = SERVER_CORE) -> Server:
    """The SDK's ``MCPServer`` on uvicorn: JSON answers (its fastest configuration) by default,
    SSE-framed answers (its default configuration) with ``json_response=False``."""
    port = free_port()
    cmd = [PY, "-m", "bench.baseline_server", "--port", str(port), *(["--stateless"] if stateless else []),
           *(["--json"] if json_response else [])]
    name = "baseline-json" if json_response else "baseline-sse"
    return Server(name + ("-stateless" if stateless else ""), cmd, port=port, workdir=workdir, core=core)


def ceiling(workdir: Path, *, core: int | None = SERVER_CORE) -> Server:
    port = free_port()
    cmd = [PY, "-m", "bench.ceiling_server", "--port", str(port)]
    return Server("ceiling", cmd, port=port, workdir=workdir, core=core)


@contextmanager
def running(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Start every server (in parallel), wait until each listens; always stop them all."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextmanager
def workdir(prefix: str = "northstar-bench-") -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


# -- tools ----------------------------------------------------------------------------------
def ensure_wrk() -> str | None:
    """The path of ``wrk``, installing the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk is missing; installing it with apt-get ...", flush=True)
    sudo = [] if os.geteuid() == 0 or not shutil.which("sudo") else ["sudo"]
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        subprocess.run([*sudo, *cmd], check=False, stdout=subprocess.DEVNULL, timeout=600)
    found = shutil.which("wrk")
    print(f"bench: installed wrk at {found}" if found else "bench: could not install wrk", flush=True)
    return found


def ensure_matplotlib() -> bool:
    """True when matplotlib imports, installing it into this interpreter's venv when missing."""
    if importlib.util.find_spec("matplotlib") is not None:
        return True
    print("bench: matplotlib is missing; installing it with pip (for the PNG chart) ...", flush=True)
    done = subprocess.run([PY, "-m", "pip", "install", "--quiet", "matplotlib"], check=False, timeout=900)
    importlib.invalidate_caches()
    ok = done.returncode == 0 and importlib.util.find_spec("matplotlib") is not None
    if ok:
        from importlib.metadata import version

        print(f"bench: installed matplotlib {version('matplotlib')}", flush=True)
    else:
        print("bench: could not install matplotlib; the PNG chart will be skipped", flush=True)
    return ok


def commit_latency_ms(commits: int = 200) -> float:
    """Mean time of one committed SQLite transaction (WAL, ``synchronous=FULL``: an fsync) on the
    filesystem of the servers' temp data dirs: the floor of a durably audited call at c=1."""
    import sqlite3

    with workdir("northstar-bench-fsync-") as tmp:
        conn = sqlite3.connect(tmp / "fsync.db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (x INTEGER)")
            start = time.perf_counter()
            for i in range(commits):
                conn.execute("BEGIN")
                conn.execute("INSERT INTO t VALUES (?)", (i,))
                conn.execute("COMMIT")
            return (time.perf_counter() - start) / commits * 1000
        finally:
            conn.close()


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "unknown"
