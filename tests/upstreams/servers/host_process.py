"""A stand-in gateway process: runs one stdio upstream under an UpstreamHost, prints its pid.

    python host_process.py     # prints "<upstream pid>" once ready, then waits to be killed
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.upstreams.kit import pid_of, ready, running_host, stdio_spec


async def main() -> None:
    async with running_host() as host:
        handle = await host.start(stdio_spec())
        await ready(handle)
        print(await pid_of(handle), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
