"""The federation benchmark's floor: a byte relay on trio in front of the upstream.

Each accepted connection gets its own connection to the upstream, and bytes are copied both
ways as they arrive: no HTTP parsing, no authentication, no audit. What this adds to the
direct call is what any trio process on the call's path costs on this machine (two more
socket hops, two more processes waking per call), the least a gateway written on this stack
could add; northstar's added time is reported beside it.

    python -m bench.relay_server --port 8301 --upstream-port 8300
"""

from __future__ import annotations

import argparse
from functools import partial

import trio

CHUNK = 65536


async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    try:
        while data := await src.receive_some(CHUNK):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await dst.aclose()


async def relay(upstream_port: int, client: trio.SocketStream) -> None:
    try:
        upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
    except OSError:
        await client.aclose()
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, client, upstream)
        nursery.start_soon(pump, upstream, client)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    args = ap.parse_args()
    trio.run(partial(trio.serve_tcp, partial(relay, args.upstream_port), args.port, host="127.0.0.1"))


if __name__ == "__main__":
    main()
