"""Where a governed call's time goes: the moments each layer reaches, on the call's own task.

A door opens a :class:`CallClock` for the call (:func:`start`); the layers below mark the
moments they own (:func:`mark`), each a ``time.perf_counter()`` reading on the clock found in a
context variable, so no layer passes the clock on; the door closes it (:meth:`PhaseStats.finish`)
and the intervals between consecutive marks land in bounded rings, summarised by
``GET /v1/ops/phases``. The marks, in the order a call reaches them:

==============  =================================================  ==========================
mark            reached when                                       marked by
==============  =================================================  ==========================
``received``    the request was read and parsed                    the door
``decided``     the gate chain answered                            the gateway facade
``sent``        the request to an upstream was written             the upstream session
``answered``    the upstream's reply was read                      the upstream session
``ran``         the tool's (or the upstream's) result is back      the call runner
``recorded``    the call's audit record is committed               the call runner
``replied``     the answer was written to the client               the door
==============  =================================================  ==========================

A call without ``sent`` ran a built-in tool (kind ``local``), one with it reached an upstream
(kind ``upstream``). The intervals are named for what happens in them (:data:`INTERVALS`), and
``total`` spans the first mark to the last. Calls that were refused or failed before running
(no ``ran``) are not summarised: their time is the gate chain's, and it would blur the figures
of the calls that ran. Nor are calls held for an approval (:func:`skip`): their wait is a
person's.

Costs: one context-variable read and one clock reading per mark, a handful per call. Marks
made outside an open clock (a call from no door, e.g. the sandbox) are dropped.
"""

from __future__ import annotations

import time
from array import array
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MARKS = ("received", "decided", "sent", "answered", "ran", "recorded", "replied")
#: (from, to) -> the interval's name.
INTERVALS = {
    ("received", "decided"): "front",  # read, authenticate, session checks, the gate chain
    ("decided", "sent"): "dispatch",  # the decision's record (a write), arguments, pins, the request
    ("sent", "answered"): "upstream",  # the upstream's own time and the wire both ways
    ("answered", "ran"): "result",  # the reply read back and checked against the pinned definition
    ("decided", "ran"): "tool",  # a built-in tool's run, its output checked
    ("ran", "recorded"): "audit",  # the outcome record appended and committed (durable)
    ("recorded", "replied"): "reply",  # the answer serialised and written
}
KINDS = ("local", "upstream")
#: The ASGI scope key under which a door that reads requests itself (the express lane) gives the
#: ``perf_counter()`` reading of when it had the whole request: the call's ``received``.
RECEIVED_AT_KEY = "northstar.received_at"
DEFAULT_KEEP = 4096  # the most recent calls kept per door and kind
_CLOCK: ContextVar[CallClock | None] = ContextVar("northstar_call_clock", default=None)


@dataclass(slots=True)
class CallClock:
    """One call's marks: ``(name, perf_counter)`` in the order reached."""

    door: str
    marks: list[tuple[str, float]] = field(default_factory=list)
    kept: bool = True  # False: not summarised (a held call's time is a human's, not the gateway's)

    def mark(self, name: str, at: float | None = None) -> None:
        self.marks.append((name, time.perf_counter() if at is None else at))


def start(door: str, received_at: float | None = None) -> CallClock:
    """Open a clock for the call on this task (``received`` marked at ``received_at`` or now)."""
    clock = CallClock(door)
    clock.mark("received", received_at)
    _CLOCK.set(clock)
    return clock


def current() -> CallClock | None:
    return _CLOCK.get()


def skip() -> None:
    """Leave the current call out of the summary (it waits for something outside the gateway)."""
    clock = _CLOCK.get()
    if clock is not None:
        clock.kept = False


def drop(clock: CallClock) -> None:
    """Stop marking ``clock`` on this task without keeping it (the call was cancelled or failed)."""
    if _CLOCK.get() is clock:
        _CLOCK.set(None)


def mark(name: str) -> None:
    """Mark ``name`` on the current call's clock, if there is one."""
    clock = _CLOCK.get()
    if clock is not None:
        clock.marks.append((name, time.perf_counter()))


def intervals(clock: CallClock) -> tuple[str, dict[str, float]] | None:
    """The call's kind and its intervals in µs, or None when it did not run (no ``ran``)."""
    kind = kind_of(clock.marks)
    return None if kind is None else (kind, _intervals(clock.marks))


def kind_of(marks: list[tuple[str, float]]) -> str | None:
    """``upstream`` (it reached an upstream), ``local``, or None (it never ran)."""
    ran = sent = False
    for name, _ in marks:
        if name == "ran":
            ran = True
        elif name == "sent":
            sent = True
    if not ran:
        return None
    return "upstream" if sent else "local"


def _intervals(marks: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    previous: tuple[str, float] | None = None
    for name, at in marks:
        if previous is not None:
            label = INTERVALS.get((previous[0], name)) or f"{previous[0]}-{name}"
            out[label] = out.get(label, 0.0) + (at - previous[1]) * 1e6
        previous = (name, at)
    out["total"] = (marks[-1][1] - marks[0][1]) * 1e6
    return out


class _Series:
    """One door and kind: each interval's most recent values in a ring of doubles (``array``: no
    object per call is kept, so the rings add nothing for the garbage collector to walk)."""

    __slots__ = ("calls", "keep", "rings")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.calls = 0  # every call ever recorded here (the rings keep the most recent)
        self.rings: dict[str, array[float]] = {}

    def add(self, values: dict[str, float]) -> None:
        at = self.calls % self.keep
        for label, value in values.items():
            ring = self.rings.get(label)
            if ring is None:  # a phase first seen now: NaN for the calls before it
                ring = self.rings[label] = array("d", _NAN_BLOCK[:1] * self.keep)
            ring[at] = value
        if len(values) != len(self.rings):
            for label, ring in self.rings.items():
                if label not in values:
                    ring[at] = _NAN
        self.calls += 1

    def recent(self, n: int | None) -> dict[str, array[float]]:
        """Each interval's values over the most recent ``n`` calls kept (all when None; NaN where
        the phase was not on that call's path): copies, for :func:`summarise`."""
        held = min(self.calls, self.keep)
        n = held if n is None else min(n, held)
        end = self.calls % self.keep
        out: dict[str, array[float]] = {}
        for label, ring in self.rings.items():
            window = ring[end - n:end] if held < self.keep else (ring[end:] + ring[:end])[held - n:]
            out[label] = window
        return out


_NAN = float("nan")
_NAN_BLOCK = array("d", [_NAN])


class PhaseStats:
    """The most recent calls' intervals, per door and kind, in bounded rings."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep = keep
        self._series: dict[tuple[str, str], _Series] = {}

    def finish(self, clock: CallClock, *, replied: bool = True) -> None:
        """Close the call's clock (``replied`` marked now when the door wrote the answer) and keep
        its intervals. The context variable is cleared, so later marks on this task are dropped."""
        drop(clock)
        if not clock.kept:
            return
        marks = clock.marks
        if replied:
            marks.append(("replied", time.perf_counter()))
        kind = kind_of(marks)
        if kind is None:
            return
        series = self._series.get((clock.door, kind))
        if series is None:
            series = self._series[(clock.door, kind)] = _Series(self.keep)
        series.add(_intervals(marks))

    def snapshot(self, recent: int | None = None) -> list[tuple[str, str, int, dict[str, array[float]]]]:
        """What :func:`summarise` needs, copied now (the rings' recent values): taken on the event
        loop, and the percentiles worked out elsewhere."""
        return [(door, kind, series.calls, series.recent(recent))
                for (door, kind), series in sorted(self._series.items())]

    def summary(self, recent: int | None = None) -> dict[str, Any]:
        """Per door and kind: calls recorded, and each interval's count and p50/p90/p99 in µs over
        the most recent ``recent`` calls (all kept when None)."""
        return summarise(self.snapshot(recent))


def summarise(snapshot: list[tuple[str, str, int, dict[str, array[float]]]]) -> dict[str, Any]:
    """The summary of a :meth:`PhaseStats.snapshot` (pure: safe to run in a worker thread)."""
    out: dict[str, Any] = {}
    for door, kind, calls, windows in snapshot:
        values = {label: [v for v in window if v == v] for label, window in windows.items()}  # NaN: not reached
        phases = {label: _percentiles(v) for label, v in values.items() if v}
        out.setdefault(door, {})[kind] = {"calls": calls, "phases": phases}
    return out


def _percentiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))], 1)

    return {"n": n, "p50_us": at(0.5), "p90_us": at(0.9), "p99_us": at(0.99)}
