"""``northstar serve`` that cannot listen says why in one line and exits 1.

It used to print a 140-line exception group (supervisor, nursery, Hypercorn) for a port that
was simply taken.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.harness import gateway_env


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "northstar", "serve", *args], env=gateway_env(tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)


def said(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What ``serve`` wrote on stderr besides its structured start-up log lines (the identity
    announcement comes before the port is opened), and no traceback anywhere."""
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if not line.startswith('{"ts": ')]


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(tmp_path, "--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 1
    assert said(done) == [
        f"northstar: port {port} is in use on 127.0.0.1: stop what uses it, or pass --port (0 picks a free one)"
    ]
    assert done.stdout == ""


def test_an_address_not_on_this_machine_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = serve(tmp_path, "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: never a local address
    assert done.returncode == 1
    assert said(done) == [
        "northstar: cannot listen on 192.0.2.1:0: that address is not on this machine (see --host)"
    ]
