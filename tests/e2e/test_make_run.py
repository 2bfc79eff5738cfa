"""The README's first command: ``make run`` serves a healthy gateway with no other set-up, writes
the one credential to copy (the bootstrap admin key) and the README's curl examples work with it."""

from __future__ import annotations

import json
import os
import re
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
        lines = []
        for raw in proc.stderr:  # bounded by the gateway's start; the timeout below guards a hang
            line = raw.decode(errors="replace")
            lines.append(line)
            if '"listening"' in line:
                assert json.loads(line)["urls"] == [f"http://127.0.0.1:{port}"]
                break
        else:
            pytest.fail("make run exited before listening")
        resp = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=10)
        assert resp.status_code == 200 and resp.json()["status"] == "ok"
        assert (tmp_path / "data" / "northstar.db").exists()
        key_file = tmp_path / "data" / "admin.key"
        assert [x for x in lines if f"admin key: {key_file}" in x]  # printed: where, never what
        assert key_file.read_text().strip() not in "".join(lines)
        for command in readme_curls():
            done = subprocess.run(["bash", "-c", command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
            assert done.returncode == 0 and "error" not in json.loads(done.stdout), (command, done.stdout)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def readme_curls() -> list[str]:
    """The README's curl examples (continuation lines joined), run from the directory above ``data``."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    commands = [" ".join(line.split()) for b in blocks for line in re.sub(r"\\\n\s*", "", b).splitlines()]
    curls = [c for c in commands if c.startswith("curl ")]
    assert len(curls) == 3 and all("data/admin.key" in c for c in curls[1:]), curls
    return curls
