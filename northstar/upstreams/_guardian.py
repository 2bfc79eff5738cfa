"""Runs a stdio upstream and takes it down when the gateway dies (standard library only).

The gateway starts ``python -I _guardian.py <command> [args...]`` instead of the command
itself. The guardian runs the command with the same stdin, stdout and stderr, in its own
process group (the SDK starts the guardian in a new session, so the command shares that
group: the SDK's shutdown signals the whole group), and exits with the command's status.

Why: a gateway that exits in order stops its upstreams itself, but one that is killed
(``SIGKILL``, OOM) cannot. The guardian notices that its parent changed and kills the
group, so no upstream outlives its gateway. (``PR_SET_PDEATHSIG`` would be simpler, but it
fires when the *thread* that spawned the child exits, and Trio spawns from worker threads
that come and go.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

POLL_S = 0.2


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: _guardian.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    try:
        child = subprocess.Popen(argv)
    except OSError as exc:
        print(f"cannot start {argv[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except OSError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            code = child.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:  # the gateway is gone: take the whole group down
                os.killpg(0, signal.SIGKILL)
            continue
        return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
