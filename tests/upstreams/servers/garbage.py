"""A broken upstream: answers its first line on stdin with a flood of non-JSON lines, then hangs.

Not an MCP server on purpose: it stands for an upstream that answers garbage.
"""

from __future__ import annotations

import sys
import time

if __name__ == "__main__":
    sys.stdin.readline()
    for n in range(50):
        sys.stdout.write(f"this is not JSON-RPC, line {n}\n")
    sys.stdout.flush()
    time.sleep(3600)
