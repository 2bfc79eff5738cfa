"""The composition root wires the audit log's lone-call commit to the admission's in-flight count:
a call alone commits its record in its own task; with a second call in flight, the group commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from northstar.common.config import Settings
from northstar.mcp_gateway.transports.rest.app import build_rest_app
from northstar.policy.admission import Admission
from northstar.policy.limits import PrincipalLimits
from northstar.runtime import Runtime


async def call(app: Any, op: str, arguments: dict[str, Any]) -> int:
    resp = await app.test_client().post(f"/v1/tools/{op}/call", json={"arguments": arguments})
    return int(resp.status_code)


async def test_a_lone_call_commits_in_its_own_task_and_concurrent_calls_group(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_level="WARNING", auth_mode="headers", enable_diagnostics=True)
    async with Runtime(settings).running() as services:
        app, audit = build_rest_app(services), services.audit
        assert audit.lone is not None
        audit.here_budget_s = float("inf")  # the disk's speed is not what this test is about
        assert await call(app, "echo.ping", {"message": "alone"}) == 200
        assert audit.stats.here == 1 and audit.stats.appended == audit.stats.flushes
        here = audit.stats.here
        # one call sleeping in flight (until cancelled): the other's record goes through the flusher
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, app, "diagnostics.sleep", {"seconds": 600})
            with trio.fail_after(30):
                while services.gateway.runner.admission.limits.total_in_flight == 0:
                    await trio.testing.wait_all_tasks_blocked()
            assert await call(app, "echo.ping", {"message": "beside a sleeper"}) == 200
            assert audit.stats.here == here and audit.stats.flushes > here
            nursery.cancel_scope.cancel()
        assert (await audit.verify()).ok


async def test_the_setting_turns_it_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, log_level="WARNING", auth_mode="headers",
                        audit_commit_lone_inline=False)
    async with Runtime(settings).running() as services:
        assert services.audit.lone is None
        assert await call(build_rest_app(services), "echo.ping", {"message": "x"}) == 200
        assert services.audit.stats.here == 0 and services.audit.stats.appended >= 1


def test_alone_counts_every_principals_calls() -> None:
    admission = Admission(PrincipalLimits(rate=100.0, burst=10, max_in_flight=4))
    assert admission.alone()
    admission.take("t/a", 0.0)
    assert admission.alone()  # the caller itself
    admission.take("t/b", 0.0)
    assert not admission.alone()
    admission.give_back("t/b")
    admission.give_back("t/b")  # an extra give-back changes nothing
    assert admission.alone() and admission.limits.total_in_flight == 1
    admission.give_back("t/a")
    assert admission.limits.total_in_flight == 0
