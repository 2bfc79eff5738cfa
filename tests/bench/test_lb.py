"""The replica benchmark's balancer: each connection goes to the next backend, bytes both ways."""

from __future__ import annotations

import trio

from bench.lb import serve


async def test_connections_go_round_robin_and_bytes_flow_both_ways() -> None:
    async def backend(tag: bytes, stream: trio.SocketStream) -> None:
        async with stream:
            data = await stream.receive_some(1024)
            await stream.send_all(tag + data)

    async with trio.open_nursery() as nursery:
        ports = []
        for tag in (b"a:", b"b:"):
            listeners = await nursery.start(trio.serve_tcp, lambda s, t=tag: backend(t, s), 0)
            ports.append(listeners[0].socket.getsockname()[1])
        port = await nursery.start(serve, 0, [("127.0.0.1", p) for p in ports])
        answers = []
        with trio.fail_after(10):
            for i in range(4):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(b"hello%d" % i)
                    answers.append(await stream.receive_some(1024))
        nursery.cancel_scope.cancel()
    assert answers == [b"a:hello0", b"b:hello1", b"a:hello2", b"b:hello3"]
