"""The README's first command: ``make run`` serves a healthy gateway with no other set-up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import httpx2
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_serves_health(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}", f"DATA={tmp_path / 'data'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:  # bounded by the gateway's start; the timeout below guards a hang
            line = raw.decode(errors="replace")
            if '"listening"' in line:
                assert json.loads(line)["urls"] == [f"http://127.0.0.1:{port}"]
                break
        else:
            pytest.fail("make run exited before listening")
        resp = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
        assert (tmp_path / "data" / "northstar.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
