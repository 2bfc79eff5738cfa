"""Upstreams that answer garbage or never start, and callers that send nonsense: answers, not crashes."""

from __future__ import annotations

import trio

from northstar.common.errors import UpstreamUnavailable, ValidationFailed
from northstar.upstreams import Call, GetStatus, ListTools, UpstreamStatus
from tests.upstreams.kit import SERVERS, running_host, stdio_spec


async def test_an_upstream_answering_garbage_is_dropped_and_retried() -> None:
    spec = stdio_spec("garbage", str(SERVERS / "garbage.py"), env={}, secrets={},
                      breaker={"failure_threshold": 2, "open_s": 30})
    async with running_host() as host:
        handle = await host.start(spec)
        with trio.fail_after(60):
            status = await handle.session.wait_until(lambda s: s.state == "open")
        assert status.last_error is not None and "unparsable" in status.last_error
        reply = await handle.call("anything")
        assert isinstance(reply.error, UpstreamUnavailable)
        assert host.names() == ["garbage"]  # the unit is alive, only its calls are refused


async def test_callers_sending_nonsense_get_answers_and_the_actor_keeps_serving() -> None:
    spec = stdio_spec("missing", "/nonexistent/server.py", env={}, secrets={}, command="/nonexistent/binary")
    async with running_host() as host:
        handle = await host.start(spec)
        bad = await handle.ref.call(Call(tool="", arguments=[1, 2], timeout_s=float("nan"), pin="x"))  # type: ignore[arg-type]
        assert isinstance(bad.error, ValidationFailed)
        assert {e["path"] for e in bad.error.details["errors"]} == {"/tool", "/arguments", "/timeout_s", "/pin"}
        listing = await handle.ref.call(ListTools(wait_s=float("inf")), timeout=30)
        assert isinstance(listing.error, UpstreamUnavailable)
        status = await handle.ref.call(GetStatus())
        assert isinstance(status, UpstreamStatus) and status.name == "missing"
        with trio.fail_after(60):
            failed = await handle.session.wait_until(lambda s: s.consecutive_failures >= 1)
        assert failed.last_error is not None and "cannot start" in failed.last_error
        assert handle.ref.running  # nothing above crashed the actor
