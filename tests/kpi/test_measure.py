"""Measured KPIs: bounded samples, windows, verdicts, and the Prometheus exposition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import actors
from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.kpi import KpiBinding
from northstar.kpi.measure import Metrics, quantile


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Result:
    ok: bool
    latency_ms: float | None = 1.0
    error: Any = None
    target: dict[str, Any] = field(default_factory=lambda: {"tool": "notes", "operation": "add_note"})


CTX = RequestContext(request_id="r", tenant="acme", user="u")


def binding(metric: str, target: float, window: str = "5m", **kw: Any) -> KpiBinding:
    return KpiBinding(tool_name="notes", kpi_id=metric.replace("_ms", "").replace("_", "-"), metric=metric,  # type: ignore[arg-type]
                      target=target, window=window, owner="ops", **kw)


def test_quantiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (quantile(values, 0.5), quantile(values, 0.95), quantile(values, 0.99)) == (50.0, 95.0, 99.0)
    assert quantile([7.0], 0.99) == 7.0


def test_status_evaluates_each_metric_over_its_window() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    for latency in range(1, 101):
        m.record(CTX, Result(ok=True, latency_ms=float(latency)))
    for _ in range(25):
        m.record(CTX, Result(ok=False, latency_ms=5.0, error=E.ToolFailed()))
    out = {k["metric"]: k for k in m.status("notes", [
        binding("latency_p50_ms", 100), binding("latency_p95_ms", 50), binding("latency_p99_ms", 500),
        binding("error_rate", 0.1), binding("calls", 10),
    ])}
    assert out["latency_p95_ms"]["status"] == "breach" and out["latency_p95_ms"]["value"] > 50
    assert out["latency_p50_ms"]["status"] == "ok"
    assert out["error_rate"]["value"] == pytest.approx(25 / 125) and out["error_rate"]["status"] == "breach"
    calls = {k: v for k, v in out["calls"].items() if k not in ("series", "bucket_s")}
    assert calls == {"kpi_id": "calls", "metric": "calls", "target": 10.0, "comparison": "gte",
                     "window": "5m", "value": 125.0, "status": "ok", "samples": 125}
    assert out["calls"]["series"] == [0.0] * 11 + [125.0] and out["calls"]["bucket_s"] == 25.0


def test_the_series_splits_the_window_into_slices_oldest_first() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    for age, latency in ((600.0, 99.0), (290.0, 10.0), (290.0, 30.0), (130.0, 7.0), (1.0, 2.0)):  # as they come
        clock.now = 10_000.0 - age
        m.record(CTX, Result(ok=True, latency_ms=latency))
    clock.now = 10_000.0
    (p50,) = m.status("notes", [binding("latency_p50_ms", 100)])
    # 5 minutes in 12 slices of 25 s: ages 290 s -> slice 0, 130 s -> slice 6, 1 s -> slice 11; 600 s is out.
    assert p50["series"] == [10.0, None, None, None, None, None, 7.0, None, None, None, None, 2.0]
    (calls,) = m.status("notes", [binding("calls", 1)])
    assert calls["series"] == [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_old_samples_leave_the_window_and_no_data_is_reported() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    m.record(CTX, Result(ok=True, latency_ms=900.0))
    clock.now += 301
    [p95] = m.status("notes", [binding("latency_p95_ms", 500)])
    assert (p95["status"], p95["value"], p95["samples"]) == ("no_data", None, 0)
    [calls] = m.status("notes", [binding("calls", 1)])
    assert (calls["status"], calls["value"]) == ("breach", 0.0)
    [hourly] = m.status("notes", [binding("latency_p95_ms", 500, window="1h")])
    assert hourly["status"] == "breach"


def test_memory_is_bounded_per_tool_and_in_age() -> None:
    clock = Clock()
    m = Metrics(clock=clock, max_samples=100, max_age_s=60)
    for _ in range(1000):
        m.record(CTX, Result(ok=True))
    assert len(m.window("notes", 3600)) == 100
    clock.now += 61
    m.record(CTX, Result(ok=True))
    assert len(m.window("notes", 3600)) == 1


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels): parsed by prometheus_client itself."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def calls(door: str = "internal", tool: str = "notes", op: str = "add_note", outcome: str = "ok") -> Any:
    return ("northstar_tool_calls_total",
            tuple(sorted({"door": door, "tool": tool, "operation": op, "outcome": outcome}.items())))


def test_denials_count_but_are_not_samples_and_sandbox_runs_are_ignored() -> None:
    m = Metrics(clock=Clock())
    m.record(CTX, Result(ok=False, latency_ms=None, error=E.FirearmRequired()), 0.001)
    m.record(CTX.replace(sandbox=True), Result(ok=True))
    m.record(CTX, Result(ok=False, latency_ms=None, target={"tool": None, "operation": None}))
    assert m.window("notes", 60) == []
    got = samples(m.prometheus())
    assert got[calls(outcome="denied")] == 1
    assert got[calls(tool="unknown", op="unknown", outcome="denied")] == 1  # a client's name is never a label
    assert calls(outcome="ok") not in got
    duration = ("northstar_tool_call_duration_seconds_count",
                (("operation", "add_note"), ("outcome", "denied"), ("tool", "notes")))
    assert duration not in got  # it never ran: no tool latency
    request = ("northstar_request_duration_seconds_count",
               (("door", "internal"), ("outcome", "denied"), ("tool", "notes")))
    assert got[request] == 1


def test_the_kpi_samples_and_the_histogram_are_one_observation() -> None:
    m = Metrics(clock=Clock())
    for latency in (2.0, 40.0, 40.0, 700.0):
        m.record(CTX, Result(ok=True, latency_ms=latency), 0.5)
    got = samples(m.prometheus())
    labels = (("operation", "add_note"), ("outcome", "ok"), ("tool", "notes"))
    assert got[("northstar_tool_call_duration_seconds_count", labels)] == len(m.window("notes", 60)) == 4
    assert got[("northstar_tool_call_duration_seconds_sum", labels)] == pytest.approx(
        sum(s.latency_ms for s in m.window("notes", 60)) / 1000)
    assert got[("northstar_tool_call_duration_seconds_bucket", (("le", "0.05"), *labels))] == 3


def test_an_operation_name_selects_one_operation() -> None:
    m = Metrics(clock=Clock())
    m.record(CTX, Result(ok=True))
    m.record(CTX, Result(ok=True, target={"tool": "notes", "operation": "list_notes"}))
    assert len(m.window("notes", 60)) == 2
    assert len(m.window("notes.list_notes", 60)) == 1


async def test_prometheus_exposition() -> None:
    m = Metrics(clock=Clock())
    m.record(CTX, Result(ok=True, latency_ms=3.0))
    m.record(CTX, Result(ok=False, latency_ms=30.0, error=E.ToolTimeout()))
    m.status("notes", [binding("latency_p95_ms", 500)])

    class Audit:
        pending = 2

    m.audit = Audit()

    class Noop(actors.Actor[Any, Any]):
        async def handle(self, msg: Any) -> Any:
            return msg

    sup = actors.Supervisor("root", [actors.actor_child("gate_chain", Noop, capacity=8)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        m.supervisors = [sup]
        text = m.prometheus()
        await sup.stop()
    got = samples(text)
    assert got[calls(outcome="ok")] == 1
    assert got[calls(outcome="timeout")] == 1
    kpi = (("kpi_id", "latency-p95"), ("metric", "latency_p95_ms"), ("tool", "notes"))
    assert got[("northstar_kpi_value", kpi)] == 30.0
    assert got[("northstar_kpi_target", kpi)] == 500.0
    assert got[("northstar_audit_pending", ())] == 2
    assert got[("northstar_mailbox_capacity", (("actor", "gate_chain"), ("supervisor", "root")))] == 8


def test_label_values_are_escaped() -> None:
    m = Metrics(clock=Clock())
    m.record(CTX, Result(ok=True, target={"tool": 'we"ird\\', "operation": "op\n"}))
    assert calls(tool='we"ird\\', op="op\n") in samples(m.prometheus())


def test_upstream_states_are_gauged_at_scrape_time() -> None:
    m = Metrics(clock=Clock())
    states = {"remote": "ready", "flaky": "open"}
    m.upstream_states = lambda: dict(states)
    got = samples(m.prometheus())
    assert got[("northstar_upstream_up", (("state", "ready"), ("upstream", "remote")))] == 1
    assert got[("northstar_upstream_up", (("state", "open"), ("upstream", "flaky")))] == 0
    states["flaky"] = "ready"
    assert samples(m.prometheus())[("northstar_upstream_up", (("state", "ready"), ("upstream", "flaky")))] == 1


def test_two_runtimes_never_share_counts() -> None:
    a, b = Metrics(clock=Clock()), Metrics(clock=Clock())
    a.record(CTX, Result(ok=True))
    assert samples(a.prometheus())[calls()] == 1
    assert calls() not in samples(b.prometheus())  # a private registry each, never the global one
