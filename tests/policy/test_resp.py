"""The shared limits' Redis client (``northstar.policy.resp``): against the real Redis server,
and against in-process servers that misbehave (silent, closing, speaking no RESP)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from northstar.policy.resp import RedisClient, RedisError, RedisUnavailable, Script, encode, parse_url
from tests.scaleout.conftest import REDIS_URL, redis_unavailable_reason

needs_redis = pytest.mark.skipif(bool(redis_unavailable_reason()), reason=redis_unavailable_reason() or "")


def key() -> str:
    return f"nstest:{uuid.uuid4().hex}"


@needs_redis
async def test_commands_pipelines_and_error_replies() -> None:
    client = RedisClient(REDIS_URL, timeout_s=5)
    k = key()
    assert await client.execute("SET", k, "v", "PX", 10_000) == "OK"
    got, incr, deleted, gone = await client.pipeline([["GET", k], ["INCR", k], ["DEL", k], ["GET", k]])
    assert (got, deleted, gone) == (b"v", 1, None)
    assert isinstance(incr, RedisError) and "not an integer" in str(incr)  # returned in place, not raised
    replies = await client.pipeline([["SET", k, "1"], ["INCR", k], ["GET", k], ["DEL", k]])
    assert replies == ["OK", 2, b"2", 1]
    with pytest.raises(RedisError, match="unknown command"):
        await client.execute("NO-SUCH-COMMAND")
    seconds, micros = await client.execute("TIME")
    assert int(seconds) > 0 and 0 <= int(micros) < 1_000_000
    assert len(client._idle) == 1  # one connection served them all, in turn
    await client.aclose()


@needs_redis
async def test_a_script_is_loaded_again_after_the_server_forgot_it() -> None:
    client = RedisClient(REDIS_URL, timeout_s=5)
    script = Script(client, f"return {{KEYS[1], ARGV[1], '{uuid.uuid4().hex}'}}")
    first = await script(["k"], [7])
    assert first[:2] == [b"k", b"7"]
    assert await script(["k"], [8]) == [b"k", b"8", first[2]]  # by its SHA now
    await client.execute("SCRIPT", "FLUSH")  # a restarted server: NOSCRIPT, then EVAL
    assert await script(["k"], [9]) == [b"k", b"9", first[2]]
    await client.aclose()


@needs_redis
async def test_concurrent_callers_share_a_bounded_pool() -> None:
    client = RedisClient(REDIS_URL, timeout_s=5, max_connections=3)
    k = key()
    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(client.execute, "INCR", k)
    assert await client.execute("GET", k) == b"50"
    assert len(client._idle) <= 3
    await client.execute("DEL", k)
    await client.aclose()


async def serve(handler: Callable[[trio.SocketStream], Awaitable[None]], nursery: trio.Nursery) -> str:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return f"redis://127.0.0.1:{listeners[0].socket.getsockname()[1]}/0"


async def test_a_silent_server_is_unavailable_within_the_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client = RedisClient(await serve(silent, nursery), timeout_s=0.5)
        start = trio.current_time()
        with pytest.raises(RedisUnavailable, match=r"no answer within 0\.5 s"):
            await client.execute("PING")
        assert trio.current_time() - start == pytest.approx(0.5)
        assert client._idle == []  # the connection that timed out is not reused
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("reply", [b"", b"+OK", b"?what\r\n", b"$5\r\nab"])
async def test_a_broken_reply_is_unavailable_and_drops_its_connection(reply: bytes) -> None:
    async def broken(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        if reply:
            await stream.send_all(reply)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        client = RedisClient(await serve(broken, nursery), timeout_s=5)
        with pytest.raises(RedisUnavailable):
            await client.execute("PING")
        assert client._idle == []
        nursery.cancel_scope.cancel()


async def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await RedisClient("redis://127.0.0.1:1/0", timeout_s=5).execute("PING")


async def test_auth_and_select_are_sent_on_connect() -> None:
    seen: list[bytes] = []

    async def server(stream: trio.SocketStream) -> None:
        data = await stream.receive_some(4096)
        seen.append(data)
        await stream.send_all(b"+OK\r\n+OK\r\n")
        seen.append(await stream.receive_some(4096))
        await stream.send_all(b"+PONG\r\n")

    async with trio.open_nursery() as nursery:
        url = (await serve(server, nursery)).replace("redis://", "redis://app:s%40cret@").replace("/0", "/3")
        assert await RedisClient(url, timeout_s=5).execute("PING") == "PONG"
        nursery.cancel_scope.cancel()
    assert seen == [encode(["AUTH", "app", "s@cret"]) + encode(["SELECT", 3]), encode(["PING"])]


def test_urls() -> None:
    assert parse_url("redis://h:7/2").port == 7 and parse_url("redis://h:7/2").db == 2
    assert parse_url("rediss://h").tls and parse_url("redis://h").port == 6379
    with pytest.raises(ValueError):
        parse_url("http://h")


def test_encoding() -> None:
    assert encode(["SET", "k", 1, b"\x00"]) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$1\r\n\x00\r\n"
