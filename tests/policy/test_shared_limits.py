"""Limits shared on Redis: the GCRA rate and the leased slots hold for every client of one
prefix; with Redis unreachable the gateway fails open (per-process limits, ``degraded``) or
closed (503 ``limits_unavailable``, ``down``), and logs each transition once."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
import trio

from northstar.common import errors as E
from northstar.common.config import Settings
from northstar.policy.shared_limits import NO_SLOT, RedisLimits, SharedLimits, Slot, shared_limits_for
from tests.scaleout.conftest import REDIS_URL, redis_unavailable_reason

DEAD = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def prefix() -> str:
    if (reason := redis_unavailable_reason()) is not None:
        pytest.skip(reason)
    return f"nsunit-{uuid.uuid4().hex[:10]}"


def replica(url: str, prefix: str, fail: str = "open") -> RedisLimits:
    return RedisLimits.connect(url, fail=fail, prefix=prefix, lease_s=30.0)  # type: ignore[arg-type]


async def test_the_rate_is_one_budget_for_every_replica(prefix: str) -> None:
    a, b = replica(REDIS_URL, prefix), replica(REDIS_URL, prefix)
    results = []
    for i in range(10):  # burst 4 at 1/s: the 5th call, whichever replica takes it, waits
        limits = a if i % 2 else b
        taken = await limits.admit("t/u", rate=1.0, burst=4, max_in_flight=100)
        results.append(taken)
        if isinstance(taken, Slot):
            await limits.give_back(taken)
    assert [isinstance(r, Slot) for r in results] == [True] * 4 + [False] * 6
    assert isinstance(results[-1], E.RateLimited) and results[-1].retry_after >= 1
    assert a.health() == "up"


async def test_concurrent_calls_hold_a_slot_until_given_back(prefix: str) -> None:
    a, b = replica(REDIS_URL, prefix), replica(REDIS_URL, prefix)
    first = await a.admit("t/u", rate=1000.0, burst=1000, max_in_flight=2)
    second = await b.admit("t/u", rate=1000.0, burst=1000, max_in_flight=2)
    third = await a.admit("t/u", rate=1000.0, burst=1000, max_in_flight=2)
    assert isinstance(first, Slot) and isinstance(second, Slot)
    assert isinstance(third, E.RateLimited) and "concurrent" in third.message
    await b.give_back(second)
    assert isinstance(await a.admit("t/u", rate=1000.0, burst=1000, max_in_flight=2), Slot)


async def test_a_slot_held_by_a_dead_replica_expires_with_its_lease(prefix: str) -> None:
    limits = RedisLimits.connect(REDIS_URL, fail="open", prefix=prefix, lease_s=0.05)
    assert isinstance(await limits.take("sessions:t/u", 1), Slot)  # never given back
    assert isinstance(await limits.take("sessions:t/u", 1), E.RateLimited)
    await trio.sleep(0.1)  # the lease runs on Redis's clock
    assert isinstance(await limits.take("sessions:t/u", 1), Slot)


async def test_unreachable_fails_open_to_per_process_limits_and_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    limits = replica(DEAD, "x", "open")
    with caplog.at_level(logging.WARNING, logger="northstar.policy.limits"):
        for _ in range(3):
            assert await limits.admit("t/u", rate=1.0, burst=1, max_in_flight=1) is NO_SLOT
    assert limits.health() == "degraded"
    assert [r.message for r in caplog.records] == ["shared limits unavailable: per-process limits only"]


async def test_unreachable_fails_closed_with_limits_unavailable() -> None:
    limits = replica(DEAD, "x", "closed")
    refused = await limits.admit("t/u", rate=1.0, burst=1, max_in_flight=1)
    assert isinstance(refused, E.LimitsUnavailable)
    assert (refused.code, refused.http_status) == ("limits_unavailable", 503)
    assert limits.health() == "down"
    assert isinstance(await limits.take("sessions:t/u", 1), E.LimitsUnavailable)  # within retry_s: no wait


async def test_back_again_is_logged_once(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    limits = replica(REDIS_URL, prefix)
    limits._reachable, limits._retry_at = False, 0.0  # as after an outage
    with caplog.at_level(logging.WARNING, logger="northstar.policy.limits"):
        assert isinstance(await limits.admit("t/u", rate=10.0, burst=10, max_in_flight=10), Slot)
        assert isinstance(await limits.admit("t/u", rate=10.0, burst=10, max_in_flight=10), Slot)
    assert [r.message for r in caplog.records] == ["shared limits available again"]
    assert limits.health() == "up"


def test_settings_choose_the_engine_and_declare_their_ranges() -> None:
    assert type(shared_limits_for(Settings.from_values({}))) is SharedLimits
    chosen = shared_limits_for(Settings.from_values({"limits_backend": "redis", "redis_url": REDIS_URL}))
    assert isinstance(chosen, RedisLimits) and chosen.fail == "open"
    for bad in ({"limits_backend": "memcached"}, {"limits_fail": "maybe"}, {"redis_url": "http://x"},
                {"redis_timeout_s": 0}, {"redis_timeout_s": 11}, {"limits_prefix": "a b"}):
        with pytest.raises(ValueError):
            Settings.from_values(bad)


@pytest.mark.parametrize("fail", ["open", "closed"])
async def test_a_gateway_without_its_limits_engine_serves_or_refuses_and_health_says_so(
        tmp_path: Path, fail: str) -> None:
    from northstar.common.identity import RequestContextBuilder, Transport
    from northstar.mcp_gateway.transports.rest.app import build_rest_app
    from northstar.runtime import Runtime

    ctx = RequestContextBuilder().from_headers([("X-Tenant-Id", "t1"), ("X-User-Id", "u")],
                                               transport=Transport.INTERNAL)
    settings = Settings(data_dir=tmp_path, log_level="WARNING", limits_backend="redis", redis_url=DEAD,
                        limits_fail=fail)
    with trio.fail_after(60):
        async with Runtime(settings).running() as svc:
            result = await svc.gateway.call_tool(ctx, "echo.ping", {"message": "x"})
            if fail == "open":
                assert result.ok
            else:  # refused, and the refusal audited like any denial
                assert isinstance(result.error, E.LimitsUnavailable) and result.audit_seq is not None
                assert result.trace[-1] == {"gate": "limits", "decision": "deny", "code": "limits_unavailable",
                                            "reason": result.error.message}
            response = await build_rest_app(svc).test_client().get("/health")
            body = await response.get_json()
    assert body["subsystems"]["limits"] == ("degraded" if fail == "open" else "down")
    if fail == "open":
        assert response.status_code == 200 and body["degraded"] == ["limits"]
    else:
        assert response.status_code == 503 and body["down"] == ["limits"]


class FullEngine(SharedLimits):
    backend = "test"

    async def take(self, key: str, limit: int, *, lease_s: float | None = None) -> Slot | E.NorthstarError:
        self.asked = (key, limit)
        return E.RateLimited("too many at once", retry_after=1, limit=limit)


async def test_an_upstream_whose_concurrency_is_used_up_on_the_replicas_is_not_called() -> None:
    from types import SimpleNamespace

    from northstar.mcp_gateway.tools.model import UpstreamOp
    from northstar.policy.call_runner import CallRunner

    class Port:
        max_concurrency = 2
        called = False

        async def call_inline(self, *args: object, **kwargs: object) -> None:
            self.called = True

    port = Port()
    directory = SimpleNamespace(port=lambda name: port, sandbox_port=lambda name: None,
                                shared_drift=lambda *a: None)
    up = UpstreamOp(upstream="up1", tool="search", pin="p", input_schema={}, output_schema=None,
                    directory=directory)  # type: ignore[arg-type]
    call = SimpleNamespace(ctx=SimpleNamespace(sandbox=False, request_id="r"), timeout_s=None, progress=None)
    engine = FullEngine()
    runner = CallRunner(None, None, shared=engine)  # type: ignore[arg-type]
    result = await runner.invoke_upstream(SimpleNamespace(call=call, verdict=SimpleNamespace(validated={})), up)  # type: ignore[arg-type]
    assert engine.asked == ("upstream:up1", 2)
    assert isinstance(result.error, E.UpstreamUnavailable) and not port.called


async def test_the_releaser_gives_slots_back_in_batches(prefix: str) -> None:
    limits = replica(REDIS_URL, prefix)
    async with trio.open_nursery() as nursery:
        await nursery.start(limits.run_releaser)
        slots = [await limits.admit("t/u", rate=1000.0, burst=1000, max_in_flight=3) for _ in range(3)]
        assert all(isinstance(s, Slot) for s in slots)
        for slot in slots:
            await limits.give_back(slot)  # queued: no round trip in the caller
        with trio.fail_after(5):
            while await limits.client.execute("ZCARD", f"{prefix}:calls:t/u"):
                await trio.sleep(0.01)
        assert isinstance(await limits.admit("t/u", rate=1000.0, burst=1000, max_in_flight=3), Slot)
        nursery.cancel_scope.cancel()
