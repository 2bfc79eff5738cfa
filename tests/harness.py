"""Run a real northstar gateway in a subprocess for end-to-end tests.

``GatewayProcess`` starts ``python -m northstar serve --port 0`` with a fresh data
directory, waits (bounded) for its ``listening`` log line on stderr and exposes the base
URL. Stopping sends SIGTERM (or SIGINT) and returns the exit code, bounded in time.
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

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def gateway_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    env.update({"NORTHSTAR_DATA_DIR": str(data_dir), "NORTHSTAR_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


class GatewayProcess:
    def __init__(self, data_dir: Path, *, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.env = gateway_env(data_dir, env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.url = ""

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

