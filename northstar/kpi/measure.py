"""KPIs measured: recent call samples per tool, KPI status, and the Prometheus measurements.

:class:`Metrics` keeps, per tool (canonical ``tool_id``), a bounded ring of recent samples
``(t, operation, latency_ms, outcome)``: at most ``max_samples`` per tool (50 000 by
default) and none older than ``max_age_s`` (24 h), so memory is bounded whatever the
traffic. Install :meth:`Metrics.record` as ``Gateway.on_result``: it is the one observation
point of a call, feeding both the KPI samples and the Prometheus instruments (the same
latency value goes to the KPI ring and to ``northstar_tool_call_duration_seconds``), so the
KPI status and ``/metrics`` cannot disagree.

What is counted
    * Calls that reached the tool (outcome ``ok``, ``error`` or ``timeout``) are samples:
      they feed latency quantiles, ``error_rate`` (non-ok / all) and ``calls``.
    * Calls refused by a gate never ran; they are counted in
      ``northstar_tool_calls_total{outcome="denied"}`` but are not KPI samples. A call naming
      no known tool is counted under ``tool="unknown"`` (a client's names never become labels).
    * Sandbox dry runs are ignored entirely: they must not move live KPIs.

:meth:`Metrics.status` evaluates KPI bindings (and splits each window into
:data:`SERIES_BUCKETS` slices, the ``series`` the console charts) (``metric`` one of ``latency_p50_ms``,
``latency_p95_ms``, ``latency_p99_ms``, ``error_rate``, ``calls``; ``comparison`` ``lte`` or
``gte``; ``window`` like ``5m``) into ``ok`` / ``breach`` / ``no_data``. A binding's
``tool_name`` is a tool id (all its operations) or a canonical operation name
(``tool_id.operation``). Quantiles use the nearest-rank method.

The instruments live on the runtime's private registry (:class:`~northstar.common.telemetry.Meters`);
gauges read at scrape time (mailboxes, audit queue, upstream states, KPI values) come from
:class:`Scraped`. ``docs/operations.md`` lists every metric.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from northstar.common.telemetry import LATENCY_BUCKETS, Meters, outcome_of
from northstar.kpi.models import window_to_seconds

MAX_SAMPLES_PER_TOOL = 50_000
MAX_AGE_S = 86_400.0
QUANTILES = (0.5, 0.95, 0.99)
SERIES_BUCKETS = 12  # slices of a KPI's window in its status (the console draws them)
_LATENCY_METRICS = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    operation: str
    latency_ms: float
    outcome: str


@dataclass(slots=True)
class _ToolSeries:
    samples: deque[Sample]


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending, non-empty list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _as_dict(binding: Any) -> dict[str, Any]:
    if isinstance(binding, dict):
        return binding
    dumped: dict[str, Any] = binding.model_dump(mode="json")
    return dumped


class Metrics:
    """Bounded recent-call samples per tool; KPI evaluation; the call instruments."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_samples: int = MAX_SAMPLES_PER_TOOL,
        max_age_s: float = MAX_AGE_S,
        meters: Meters | None = None,
    ) -> None:
        self.clock = clock
        self.max_samples = max_samples
        self.max_age_s = max_age_s
        self._tools: dict[str, _ToolSeries] = {}
        self._kpi_values: dict[tuple[str, str, str], tuple[float | None, float]] = {}
        self.audit: Any = None  # the audit log (its ``pending`` count -> northstar_audit_pending)
        # actors.Supervisor objects (or callables returning the current one) whose mailboxes are gauged
        self.supervisors: list[Any] = []
        # () -> {upstream name: state}, read at scrape time (set by the composition root)
        self.upstream_states: Callable[[], dict[str, str]] | None = None
        self.meters = meters if meters is not None else Meters()
        registry = self.meters.registry
        self.calls = Counter("northstar_tool_calls", "Tool calls by door, tool, operation and outcome "
                             "(ok, error, timeout, denied).", ["door", "tool", "operation", "outcome"],
                             registry=registry)
        self.tool_seconds = Histogram("northstar_tool_call_duration_seconds", "Time the tool ran (the KPI "
                                      "latency samples): calls that reached the tool.",
                                      ["tool", "operation", "outcome"], registry=registry, buckets=LATENCY_BUCKETS)
        self.request_seconds = Histogram("northstar_request_duration_seconds", "Calls through a door, from the "
                                         "gate chain's decision to the outcome's audit commit.",
                                         ["door", "tool", "outcome"], registry=registry, buckets=LATENCY_BUCKETS)
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any, Any]] = {}
        registry.register(Scraped(self))

    @property
    def registry(self) -> Any:
        return self.meters.registry

    # -- recording ------------------------------------------------------------------------
    def record(self, ctx: Any, result: Any, elapsed_s: float | None = None) -> None:
        """``Gateway.on_result``: one finished call, the one observation of its KPI sample and metrics."""
        if getattr(ctx, "sandbox", False):
            return
        target = result.target or {}
        tool, operation = target.get("tool") or "unknown", target.get("operation") or "unknown"
        outcome = outcome_of(result)
        count, tool_hist, request_hist = self._instruments(ctx.transport.value, tool, operation, outcome)
        count.inc()
        if elapsed_s is not None:
            request_hist.observe(elapsed_s)
        if tool_hist is not None:
            latency_ms = float(result.latency_ms or 0.0)
            tool_hist.observe(latency_ms / 1000.0)
            self._series(tool).samples.append(Sample(self.clock(), operation, latency_ms, outcome))

    def _instruments(self, door: str, tool: str, operation: str, outcome: str) -> tuple[Any, Any, Any]:
        key = (door, tool, operation, outcome)
        children = self._children.get(key)
        if children is None:
            ran = outcome != "denied"  # a denied call never ran: it has no tool latency series
            children = self._children[key] = (self.calls.labels(door, tool, operation, outcome),
                                              self.tool_seconds.labels(tool, operation, outcome) if ran else None,
                                              self.request_seconds.labels(door, tool, outcome))
        return children

    def _series(self, tool: str) -> _ToolSeries:
        series = self._tools.get(tool)
        if series is None:
            series = self._tools[tool] = _ToolSeries(deque(maxlen=self.max_samples))
        return series

    def _prune(self, series: _ToolSeries, now: float) -> None:
        horizon = now - self.max_age_s
        samples = series.samples
        while samples and samples[0].t < horizon:
            samples.popleft()

    def window(self, tool_name: str, seconds: float) -> list[Sample]:
        """Samples of a tool (or one ``tool.operation``) within the last ``seconds``."""
        tool, _, operation = tool_name.partition(".")
        series = self._tools.get(tool)
        if series is None:
            return []
        now = self.clock()
        self._prune(series, now)
        since = now - min(seconds, self.max_age_s)
        out = []
        for sample in reversed(series.samples):
            if sample.t < since:
                break
            if not operation or sample.operation == operation:
                out.append(sample)
        return out

    # -- KPIs -----------------------------------------------------------------------------
    @staticmethod
    def value(metric: str, samples: list[Sample]) -> float | None:
        if metric == "calls":
            return float(len(samples))
        if not samples:
            return None
        if metric == "error_rate":
            return sum(1 for s in samples if s.outcome != "ok") / len(samples)
        q = _LATENCY_METRICS.get(metric)
        if q is None:
            raise ValueError(f"unknown metric {metric!r}")
        return quantile(sorted(s.latency_ms for s in samples), q)

    def status(self, tool_name: str, bindings: Iterable[Any]) -> list[dict[str, Any]]:
        """Each binding's current value and verdict: ``ok``, ``breach`` or ``no_data``."""
        out = []
        for raw in bindings:
            b = _as_dict(raw)
            samples = self.window(b.get("tool_name") or tool_name, window_to_seconds(b["window"]))
            value = self.value(b["metric"], samples)
            target = float(b["target"])
            if value is None:
                verdict = "no_data"
            elif b["comparison"] == "gte":
                verdict = "ok" if value >= target else "breach"
            else:
                verdict = "ok" if value <= target else "breach"
            self._kpi_values[(tool_name, b["kpi_id"], b["metric"])] = (value, target)
            window_s = min(window_to_seconds(b["window"]), self.max_age_s)
            out.append({"kpi_id": b["kpi_id"], "metric": b["metric"], "target": target,
                        "comparison": b["comparison"], "window": b["window"], "value": value,
                        "status": verdict, "samples": len(samples),
                        "series": self.series(b["metric"], samples, window_s), "bucket_s": window_s / SERIES_BUCKETS})
        return out

    def series(self, metric: str, samples: list[Sample], window_s: float,
               buckets: int = SERIES_BUCKETS) -> list[float | None]:
        """The metric over ``buckets`` equal slices of the window, oldest first (None: no call in it)."""
        now = self.clock()
        width = window_s / buckets
        slices: list[list[Sample]] = [[] for _ in range(buckets)]
        for sample in samples:
            age = now - sample.t
            index = buckets - 1 - min(buckets - 1, max(0, int(age // width))) if width > 0 else buckets - 1
            slices[index].append(sample)
        return [self.value(metric, part) if part or metric == "calls" else None for part in slices]

    # -- Prometheus -----------------------------------------------------------------------
    def kpi_values(self) -> list[tuple[tuple[str, str, str], tuple[float | None, float]]]:
        """((tool, kpi_id, metric), (last value, target)) of every KPI evaluated so far, sorted."""
        return sorted(self._kpi_values.items())

    def prometheus(self) -> str:
        """The text exposition format of the runtime's registry."""
        return generate_latest(self.registry).decode()


class Scraped(Collector):
    """Gauges read when scraped: KPI values and targets, the audit queue, mailboxes, upstreams."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # read at scrape time; their series vary

    def collect(self) -> Iterator[Any]:
        yield from self._kpis()
        pending = _audit_pending(self.metrics.audit)
        if pending is not None:
            gauge = GaugeMetricFamily("northstar_audit_pending", "Audit records queued, not yet committed.")
            gauge.add_metric([], pending)
            yield gauge
        yield from self._mailboxes()
        yield from self._upstreams()

    def _kpis(self) -> Iterator[Any]:
        labels = ["tool", "kpi_id", "metric"]
        value = GaugeMetricFamily("northstar_kpi_value", "Last evaluated KPI value (NaN: no data).", labels=labels)
        target = GaugeMetricFamily("northstar_kpi_target", "KPI target.", labels=labels)
        for key, (current, goal) in self.metrics.kpi_values():
            value.add_metric(list(key), math.nan if current is None else float(current))
            target.add_metric(list(key), float(goal))
        yield value
        yield target

    def _mailboxes(self) -> Iterator[Any]:
        current = [sup() if callable(sup) else sup for sup in self.metrics.supervisors]
        rows = [row for sup in current if sup is not None for row in _mailboxes(sup.stats())]
        gauges = {"queued": "Messages waiting in the mailbox.", "capacity": "Mailbox capacity.",
                  "in_flight": "Messages being handled."}
        for name, help_text in gauges.items():
            gauge = GaugeMetricFamily(f"northstar_mailbox_{name}", help_text, labels=["supervisor", "actor"])
            for sup_name, actor, box in rows:
                value = getattr(box, name, None)
                if isinstance(value, int | float) and math.isfinite(value):
                    gauge.add_metric([sup_name, actor], value)
            yield gauge

    def _upstreams(self) -> Iterator[Any]:
        states = self.metrics.upstream_states() if self.metrics.upstream_states is not None else {}
        gauge = GaugeMetricFamily("northstar_upstream_up", "1 when the upstream MCP server is connected "
                                  "and ready, else 0; its state in the label.", labels=["upstream", "state"])
        for name, state in sorted(states.items()):
            gauge.add_metric([name, state], 1.0 if state == "ready" else 0.0)
        yield gauge


def _audit_pending(audit: Any) -> int | None:
    pending = getattr(audit, "pending", None)
    if callable(pending):
        pending = pending()
    return int(pending) if isinstance(pending, int | float) and not isinstance(pending, bool) else None


def _mailboxes(stats: Any) -> Iterable[tuple[str, str, Any]]:
    """(supervisor name, child id, MailboxStats) for every actor child of a supervisor."""
    for child in getattr(stats, "children", ()):
        if child.mailbox is not None:
            yield stats.name, child.id, child.mailbox
