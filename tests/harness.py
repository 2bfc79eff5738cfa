"""Run a real northstar gateway in a subprocess for end-to-end tests.

``GatewayProcess`` starts ``python -m northstar serve --port 0`` with a fresh data
directory, waits (bounded) for its ``listening`` log line on stderr and exposes the base
URL. Stopping sends SIGTERM (or SIGINT) and returns the exit code, bounded in time.

Identity, the one way every end-to-end test does it: the suites act as many principals, so a
``GatewayProcess`` runs in explicit ``headers`` mode (``NORTHSTAR_AUTH_MODE=headers``) unless
given ``auth_mode=None`` (the product's default, ``api_key``) or another mode. Identity headers
never make an admin: admin calls use the gateway's bootstrap admin key (``admin_key``,
``admin_headers``; the key the gateway wrote to ``<data_dir>/admin.key`` on first start).
``admin_headers(url)`` finds them for helpers that only know a gateway's URL.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: Gateways started by this process, by URL (for :func:`admin_headers`).
RUNNING: dict[str, GatewayProcess] = {}


def gateway_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's northstar process: none of the caller's ``NORTHSTAR_*``
    settings, and no config file (``NORTHSTAR_CONFIG=""``: a ``northstar.toml`` in the working
    directory is ignored) unless ``extra`` names one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    env.update({"NORTHSTAR_DATA_DIR": str(data_dir), "NORTHSTAR_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
                "NORTHSTAR_CONFIG": ""})
    env.update(extra or {})
    return env


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def admin_headers(url: str) -> dict[str, str]:
    """The admin credential of the gateway serving ``url`` (started here by a :class:`GatewayProcess`)."""
    parts = urlsplit(url)
    return RUNNING[f"{parts.scheme}://{parts.netloc}"].admin_headers


class GatewayProcess:
    def __init__(self, data_dir: Path, *, args: Sequence[str] = (), env: dict[str, str] | None = None,
                 auth_mode: str | None = "headers", admin_key_from: Path | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        mode = {"NORTHSTAR_AUTH_MODE": auth_mode} if auth_mode else {}
        self.env = gateway_env(data_dir, {**mode, **(env or {})})
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.url = ""
        # Replicas on one store share the first one's bootstrap key (only it writes the file).
        self.admin_key_file = (admin_key_from or data_dir) / "admin.key"
        self._admin_key: str | None = None

    @property
    def admin_key(self) -> str:
        """The bootstrap admin key the gateway (or the replica named by ``admin_key_from``) wrote."""
        if self._admin_key is None:
            self._admin_key = self.admin_key_file.read_text(encoding="ascii").strip()
        return self._admin_key

    @property
    def admin_headers(self) -> dict[str, str]:
        return bearer(self.admin_key)

    def start(self) -> GatewayProcess:
        cmd = [sys.executable, "-m", "northstar", "serve", "--host", "127.0.0.1", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = START_TIMEOUT_S
        while True:
            try:
                event = self._events.get(timeout=deadline)
            except queue.Empty:
                self.kill()
                raise RuntimeError("gateway did not start:\n" + "\n".join(self.lines[-40:])) from None
            if event.get("msg") == "__exit__":
                raise RuntimeError("gateway exited at start:\n" + "\n".join(self.lines[-40:]))
            if event.get("msg") == "listening":
                self.url = event["urls"][0].rstrip("/")
                RUNNING[self.url] = self
                return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._events.put(event)
        self._events.put({"msg": "__exit__"})

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.proc is not None
        if RUNNING.get(self.url) is self:
            del RUNNING[self.url]
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stderr_text(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


def northstar_cli(data_dir: Path, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a ``northstar`` admin command against the same data directory."""
    return subprocess.run(
        [sys.executable, "-m", "northstar", *args], env=gateway_env(data_dir, env),
        capture_output=True, text=True, timeout=timeout, check=False,
    )

