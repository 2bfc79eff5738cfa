"""The call's phase clock: marks on the call's own task, intervals named by what happens in them."""

from __future__ import annotations

import pytest
import trio

from northstar.common import phases


def clock_with(door: str, *marks: tuple[str, float]) -> phases.CallClock:
    clock = phases.CallClock(door)
    for name, at in marks:
        clock.mark(name, at)
    return clock


def test_an_upstream_call_is_cut_into_its_named_intervals() -> None:
    clock = clock_with("http", ("received", 1.0), ("decided", 1.0002), ("sent", 1.0003), ("answered", 1.0013),
                       ("ran", 1.0014), ("recorded", 1.0019), ("replied", 1.002))
    kind, values = phases.intervals(clock) or ("", {})
    assert kind == "upstream"
    assert list(values) == ["front", "dispatch", "upstream", "result", "audit", "reply", "total"]
    assert values["upstream"] == pytest.approx(1000, abs=0.01) and values["total"] == pytest.approx(2000, abs=0.01)


def test_a_built_in_call_has_a_tool_interval_and_an_unknown_pair_is_named_by_its_marks() -> None:
    kind, values = phases.intervals(clock_with("other", ("received", 0.0), ("decided", 0.001), ("ran", 0.002),
                                               ("recorded", 0.003))) or ("", {})
    assert kind == "local" and set(values) == {"front", "tool", "audit", "total"}
    _, odd = phases.intervals(clock_with("x", ("received", 0.0), ("ran", 0.001))) or ("", {})
    assert set(odd) == {"received-ran", "total"}


def test_a_call_that_never_ran_is_not_summarised() -> None:
    stats = phases.PhaseStats()
    stats.finish(clock_with("http", ("received", 0.0), ("decided", 0.001)))
    assert stats.summary() == {}


async def test_marks_land_on_the_clock_of_the_task_that_opened_it() -> None:
    stats = phases.PhaseStats(keep=8)
    phases.mark("ran")  # no clock open: dropped, no error

    async def call(door: str, done: list[phases.CallClock]) -> None:
        clock = phases.start(door)
        await trio.lowlevel.checkpoint()
        phases.mark("decided")
        await trio.lowlevel.checkpoint()
        phases.mark("ran")
        done.append(clock)
        stats.finish(clock)
        phases.mark("recorded")  # after finish: the clock is closed on this task
        assert phases.current() is None

    done: list[phases.CallClock] = []
    async with trio.open_nursery() as nursery:  # two calls interleaved: each keeps its own marks
        nursery.start_soon(call, "a", done)
        nursery.start_soon(call, "b", done)
    assert sorted(c.door for c in done) == ["a", "b"]
    assert all([m for m, _ in c.marks] == ["received", "decided", "ran", "replied"] for c in done)
    summary = stats.summary()
    assert summary["a"]["local"]["calls"] == 1 and summary["b"]["local"]["calls"] == 1


def test_the_rings_are_bounded_and_recent_narrows_the_summary() -> None:
    stats = phases.PhaseStats(keep=4)
    for i in range(10):
        stats.finish(clock_with("http", ("received", 0.0), ("decided", 0.0), ("ran", (i + 1) / 1e6),
                                ("recorded", (i + 1) / 1e6)), replied=False)
    local = stats.summary()["http"]["local"]
    assert local["calls"] == 10 and local["phases"]["tool"]["n"] == 4  # only the most recent kept
    assert local["phases"]["tool"]["p50_us"] == pytest.approx(9.0)  # of 7, 8, 9, 10
    recent = stats.summary(recent=2)["http"]["local"]["phases"]["tool"]
    assert recent["n"] == 2 and recent["p50_us"] == pytest.approx(10.0) and recent["p99_us"] == pytest.approx(10.0)
    with pytest.raises(ValueError):
        phases.PhaseStats(keep=0)


def test_drop_forgets_a_clock_without_keeping_it() -> None:
    stats = phases.PhaseStats()
    clock = phases.start("http")
    phases.mark("ran")
    phases.drop(clock)
    phases.mark("recorded")
    assert phases.current() is None and [m for m, _ in clock.marks] == ["received", "ran"]
    assert stats.summary() == {}


def test_a_skipped_call_is_not_summarised() -> None:
    stats = phases.PhaseStats()
    clock = phases.start("http")
    phases.mark("decided")
    phases.skip()  # held for an approval: a person's wait
    phases.mark("ran")
    stats.finish(clock)
    assert stats.summary() == {} and phases.current() is None


def test_a_phase_only_some_calls_reach_counts_only_those_calls() -> None:
    stats = phases.PhaseStats(keep=3)
    plain = (("received", 0.0), ("decided", 0.0), ("ran", 1e-6), ("recorded", 2e-6))
    held_up = (("received", 0.0), ("decided", 0.0), ("odd", 5e-6), ("ran", 6e-6), ("recorded", 7e-6))
    for marks in (held_up, plain, plain, plain):  # the odd one is overwritten by the fourth call
        stats.finish(clock_with("other", *marks), replied=False)
    local = stats.summary()["other"]["local"]
    assert local["calls"] == 4 and local["phases"]["audit"]["n"] == 3
    assert "decided-odd" not in local["phases"]  # its only call left the ring
    stats.finish(clock_with("other", *held_up), replied=False)
    local = stats.summary()["other"]["local"]
    assert local["phases"]["decided-odd"]["n"] == 1 and local["phases"]["tool"]["n"] == 2
    assert stats.summary(recent=1)["other"]["local"]["phases"]["odd-ran"]["n"] == 1
