"""A small TCP load balancer for the replica benchmark: round robin per connection.

    python -m bench.lb --port 9000 --backend 127.0.0.1:8001 --backend 127.0.0.1:8002

What HAProxy's ``balance roundrobin`` in ``mode tcp`` does, and no more: each accepted
connection goes to the next backend and bytes are copied both ways until either side closes.
Used when neither HAProxy nor nginx is installed; being Python on trio it costs far more CPU
per byte than they do, which docs/performance.md accounts for.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator

import trio

CHUNK = 65536


async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    try:
        while data := await src.receive_some(CHUNK):
            await dst.send_all(data)
        await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def serve(port: int, backends: list[tuple[str, int]],
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    turn: Iterator[tuple[str, int]] = itertools.cycle(backends)

    async def handle(client: trio.SocketStream) -> None:
        host, bport = next(turn)
        try:
            upstream = await trio.open_tcp_stream(host, bport)
        except OSError:
            await client.aclose()
            return
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream)
            nursery.start_soon(pump, upstream, client)

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.lb", description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", action="append", required=True, help="host:port (repeatable)")
    args = ap.parse_args()
    backends = [(b.rsplit(":", 1)[0], int(b.rsplit(":", 1)[1])) for b in args.backend]
    trio.run(serve, args.port, backends)


if __name__ == "__main__":
    main()
