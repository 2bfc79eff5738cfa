"""A real stdio upstream (the SDK's low-level Server in a subprocess) behind the upstream actor.

No mock of the protocol anywhere: the SDK's client talks to the SDK's server over pipes, and
what the upstream saw on the wire is read back from the upstream itself (its ``events`` tool).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
from pathlib import Path

import pytest
import trio

from northstar.common.errors import UpstreamDrift, UpstreamFailed, UpstreamTimeout, UpstreamUnavailable
from northstar.upstreams import ToolsChanged, pin_of
from tests.upstreams.kit import SECRET, SERVERS, events, gone, pid_of, ready, running_host, stdio_spec, text_of


async def test_lists_pins_and_passes_results_through() -> None:
    async with running_host() as host:
        handle = await host.start(stdio_spec(max_result_bytes=4096))
        await ready(handle)
        listing = (await handle.tools()).unwrap()
        tools = listing.tools
        assert {"echo", "add", "createNote", "delete_all", "slow"} <= set(tools)
        assert tools["echo"].pin == pin_of(tools["echo"].definition) and listing.drift.clean
        assert text_of((await handle.call("echo", {"text": "hi"})).unwrap()) == "hi"
        assert (await handle.call("add", {"a": 2, "b": 3})).unwrap()["structuredContent"] == {"sum": 5}
        media = (await handle.call("media")).unwrap()
        assert [block["type"] for block in media["content"]] == ["image", "resource"]
        assert media["content"][0]["mimeType"] == "image/png" and media["structuredContent"] == {"kind": "media"}
        assert media["content"][1]["resource"] == {"uri": "note://1", "mimeType": "text/plain", "text": "embedded"}
        failed = await handle.call("fail")
        assert failed.ok and failed.is_error and "on purpose" in text_of(failed.unwrap())
        status = handle.status()
        assert status.state == "ready" and status.tool_count == len(tools) and status.server is not None
        assert status.server["name"] == "lowlevel-upstream" and status.connected_since is not None


async def test_upstream_errors_are_upstream_error_with_their_text() -> None:
    async with running_host() as host:
        handle = await host.start(stdio_spec(max_result_bytes=4096))
        await ready(handle)
        err = (await handle.call("rpc_error", {"text": "quota exceeded"})).error
        assert isinstance(err, UpstreamFailed) and err.code == "upstream_error" and err.http_status == 502
        assert "upstream says no: quota exceeded" in err.message and err.details["upstream_code"] == -32050
        bad = (await handle.call("bad_output")).error
        assert isinstance(bad, UpstreamFailed) and "output schema" in bad.message
        big = (await handle.call("big", {"size": 10_000})).error
        assert isinstance(big, UpstreamFailed) and big.details["limit"] == 4096
        assert (await handle.call("big", {"size": 100})).ok  # under the cap passes
        assert handle.status().state == "ready"  # answering with errors is healthy


async def test_progress_is_relayed_and_a_cancelled_caller_cancels_upstream() -> None:
    async with running_host() as host:
        handle = await host.start(stdio_spec())
        await ready(handle)
        seen: list[tuple[float, float | None, str | None]] = []

        async def sink(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        done = await handle.call("slow", {"seconds": 0.2}, progress=sink)
        assert text_of(done.unwrap()) == "done"
        assert seen and seen[0][1] == 10 and all(m is not None and m.startswith("step") for _, _, m in seen)

        progressed = trio.Event()

        async def first_step(progress: float, total: float | None, message: str | None) -> None:
            progressed.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(handle.call, "slow", {"seconds": 600}, progress=first_step))
                await progressed.wait()  # the upstream is inside the handler now
                nursery.cancel_scope.cancel()
        seen_upstream = await events(handle)
        cancelled = [e for e in seen_upstream if e["event"] == "cancelled"]
        assert len(cancelled) == 1 and cancelled[0]["reason"] == "caller cancelled"
        assert {"event": "handler_cancelled", "tool": "slow"} in seen_upstream
        assert handle.status().calls_in_flight == 0


async def test_timeout_is_upstream_timeout_and_cancels_upstream() -> None:
    async with running_host() as host:
        handle = await host.start(stdio_spec(call_timeout_s=0.5))
        await ready(handle)
        with trio.fail_after(30):
            reply = await handle.call("slow", {"seconds": 600})
        assert isinstance(reply.error, UpstreamTimeout) and reply.error.http_status == 504
        assert reply.error.details["timeout_s"] == 0.5
        assert any(e["event"] == "cancelled" for e in await events(handle))
        shorter = await handle.call("slow", {"seconds": 600}, timeout_s=0.2)
        assert isinstance(shorter.error, UpstreamTimeout) and shorter.error.details["timeout_s"] == 0.2


async def test_killed_mid_call_is_unavailable_then_reconnects() -> None:
    async with running_host() as host:
        handle = await host.start(stdio_spec())
        await ready(handle)
        first = await pid_of(handle)
        with trio.fail_after(30):
            reply = await handle.call("crash")
        assert isinstance(reply.error, UpstreamUnavailable) and reply.error.http_status == 503
        assert "connection" in reply.error.message
        await gone(first)
        with trio.fail_after(60):  # the next call waits for the reconnect within its own deadline
            second = await pid_of(handle)
        assert second != first
        assert text_of((await handle.call("echo", {"text": "back"})).unwrap()) == "back"
        assert handle.status().last_error is not None


async def test_list_changed_relists_and_detects_drift() -> None:
    changes: list[ToolsChanged] = []
    arrived = trio.Event()

    def on_event(event: ToolsChanged) -> None:
        changes.append(event)
        if event.reason == "list_changed":
            arrived.set()

    async with running_host() as host:
        handle = await host.start(stdio_spec(), on_event=on_event)
        await ready(handle)
        approved = {name: tool.pin for name, tool in (await handle.tools()).unwrap().tools.items()}
        assert changes[0].reason == "connect" and changes[0].drift.clean
        assert (await handle.call("echo", {"text": "pinned"}, pin=approved["echo"])).ok
        await handle.call("set_description", {"text": "Echo, now different."})
        with trio.fail_after(30):
            await arrived.wait()
        event = changes[-1]
        assert event.drift.changed == ("echo",) and not event.drift.removed and not event.drift.added
        assert handle.status().drift == {"changed": ["echo"], "removed": [], "added": []}
        refused = (await handle.call("echo", {"text": "x"}, pin=approved["echo"])).error
        assert isinstance(refused, UpstreamDrift) and refused.http_status == 409
        assert refused.details["changed"] == ["echo"]
        gone_tool = (await handle.call("no_such_tool", pin=approved["echo"])).error
        assert isinstance(gone_tool, UpstreamDrift) and gone_tool.details["removed"] == ["no_such_tool"]
        current = event.tools["echo"].pin
        after = await handle.approve({**approved, "echo": current})
        assert after.drift.clean and handle.status().drift is None
        assert (await handle.call("echo", {"text": "ok"}, pin=current)).ok


async def test_breaker_opens_on_timeouts_and_recovers() -> None:
    async with running_host() as host:
        spec = stdio_spec(call_timeout_s=0.3, breaker={"failure_threshold": 2, "open_s": 0.5})
        handle = await host.start(spec)
        await ready(handle)
        first = await pid_of(handle)
        for _ in range(2):
            assert isinstance((await handle.call("slow", {"seconds": 600})).error, UpstreamTimeout)
        refused = (await handle.call("echo", {"text": "x"})).error
        if refused is not None:  # answered at once while open (unless the probe already reconnected)
            assert isinstance(refused, UpstreamUnavailable) and refused.retry_after is not None
            assert "circuit breaker" in refused.message
        await gone(first)  # opening the breaker recycles the hung upstream
        await ready(handle)
        assert text_of((await handle.call("echo", {"text": "again"})).unwrap()) == "again"
        assert handle.status().consecutive_failures == 0


async def test_secrets_reach_the_env_only_and_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_host() as host:
        handle = await host.start(stdio_spec())
        await ready(handle)
        digest = text_of((await handle.call("env_hash", {"name": "UPSTREAM_TOKEN"})).unwrap())
        assert digest == hashlib.sha256(SECRET.encode()).hexdigest()
        leak = (await handle.call("leak", {"name": "UPSTREAM_TOKEN"})).error
        assert isinstance(leak, UpstreamFailed) and "[redacted]" in leak.message and SECRET not in leak.message
        result = (await handle.call("leak_result", {"name": "UPSTREAM_TOKEN"})).unwrap()
        assert text_of(result) == "here: [redacted]"
        with trio.fail_after(30):
            while not any("leaking to stderr" in r.getMessage() for r in caplog.records):
                await handle.call("echo", {"text": "round trip"})  # stderr is read concurrently
    stderr_lines = [r for r in caplog.records if r.name == "northstar.upstreams.stderr"]
    assert any(getattr(r, "upstream", None) == "lowlevel" for r in stderr_lines)
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert SECRET not in str(handle.status().to_dict())


async def test_no_orphan_when_stopped_or_when_the_session_task_fails() -> None:
    async with running_host() as host:
        handle = await host.start(stdio_spec())
        await ready(handle)
        first = await pid_of(handle)

        async def broken(client: object, reason: str) -> None:
            raise RuntimeError("a bug while serving")

        original = handle.session._list_again
        handle.session._list_again = broken  # type: ignore[method-assign]
        await handle.refresh(wait_s=0)  # the serving loop re-lists: the bug escapes through the transport
        await gone(first)  # the process went down with the task that owned it
        handle.session._list_again = original  # type: ignore[method-assign]
        await ready(handle)
        second = await pid_of(handle)
        assert second != first
        assert await host.stop("lowlevel")
        await gone(second, timeout=15)
        reply = await handle.call("echo", {"text": "x"})
        assert isinstance(reply.error, UpstreamUnavailable)


async def test_breaker_opens_on_failed_connects_refuses_at_once_and_recovers(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    spec = stdio_spec("flaky", str(SERVERS / "flaky.py"),
                      env={"FLAKY_FILE": str(flag), "PYTHONPATH": os.pathsep.join(sys.path)}, secrets={},
                      retry={"attempts": 2, "initial_backoff_s": 0.05}, breaker={"failure_threshold": 2, "open_s": 0.3})
    async with running_host() as host:
        handle = await host.start(spec)
        with trio.fail_after(60):
            status = await handle.session.wait_until(lambda s: s.state == "open")
        assert status.consecutive_failures >= 2 and status.retry_after_s is not None
        assert status.last_error is not None and "the backend is not up yet" in status.last_error
        refused = await handle.call("echo", {"text": "x"})
        assert isinstance(refused.error, UpstreamUnavailable) and "circuit breaker is open" in refused.error.message
        assert refused.error.retry_after is not None and refused.error.retry_after >= 1
        listing = await handle.tools()
        assert isinstance(listing.error, UpstreamUnavailable)
        flag.touch()
        await ready(handle)  # the next probe after open_s connects and closes the breaker
        assert text_of((await handle.call("echo", {"text": "up"})).unwrap()) == "up"
        assert handle.status().consecutive_failures == 0
