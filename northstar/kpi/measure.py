"""KPIs measured: recent call samples per tool, KPI status, and the Prometheus exposition.

:class:`Metrics` keeps, per tool (canonical ``tool_id``), a bounded ring of recent samples
``(t, operation, latency_ms, outcome)``: at most ``max_samples`` per tool (50 000 by
default) and none older than ``max_age_s`` (24 h), so memory is bounded whatever the
traffic. Install :meth:`Metrics.record` as ``Gateway.on_result``.

What is counted
    * Calls that reached the tool (outcome ``ok``, ``error`` or ``timeout``) are samples:
      they feed latency quantiles, ``error_rate`` (non-ok / all) and ``calls``.
    * Calls refused by a gate never ran; they are counted in
      ``northstar_tool_calls_total{outcome="denied"}`` but are not KPI samples.
    * Sandbox dry runs are ignored entirely: they must not move live KPIs.

:meth:`Metrics.status` evaluates KPI bindings (and splits each window into
:data:`SERIES_BUCKETS` slices, the ``series`` the console charts) (``metric`` one of ``latency_p50_ms``,
``latency_p95_ms``, ``latency_p99_ms``, ``error_rate``, ``calls``; ``comparison`` ``lte`` or
``gte``; ``window`` like ``5m``) into ``ok`` / ``breach`` / ``no_data``. A binding's
``tool_name`` is a tool id (all its operations) or a canonical operation name
(``tool_id.operation``). Quantiles use the nearest-rank method.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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
    totals: dict[tuple[str, str], int] = field(default_factory=dict)  # (operation, outcome) -> count


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending, non-empty list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def outcome_of(result: Any) -> str:
    if result.ok:
        return "ok"
    if result.latency_ms is None:
        return "denied"
    code = getattr(result.error, "code", None)
    return "timeout" if code == "tool_timeout" else "error"


def _as_dict(binding: Any) -> dict[str, Any]:
    if isinstance(binding, dict):
        return binding
    dumped: dict[str, Any] = binding.model_dump(mode="json")
    return dumped


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    """Bounded recent-call samples per tool; KPI evaluation; Prometheus text."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_samples: int = MAX_SAMPLES_PER_TOOL,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.clock = clock
        self.max_samples = max_samples
        self.max_age_s = max_age_s
        self._tools: dict[str, _ToolSeries] = {}
        self._kpi_values: dict[tuple[str, str, str], tuple[float | None, float]] = {}
        self.audit: Any = None  # the audit log (its ``pending`` count -> northstar_audit_pending)
        # actors.Supervisor objects (or callables returning the current one) whose mailboxes are gauged
        self.supervisors: list[Any] = []

    # -- recording ------------------------------------------------------------------------
    def record(self, ctx: Any, result: Any) -> None:
        """``Gateway.on_result``: one finished call."""
        target = result.target or {}
        tool, operation = target.get("tool"), target.get("operation")
        if tool is None or operation is None or getattr(ctx, "sandbox", False):
            return
        outcome = outcome_of(result)
        series = self._series(tool)
        key = (operation, outcome)
        series.totals[key] = series.totals.get(key, 0) + 1
        if outcome != "denied":
            series.samples.append(Sample(self.clock(), operation, float(result.latency_ms or 0.0), outcome))

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
    def prometheus(self) -> str:
        """The text exposition format (version 0.0.4)."""
        lines: list[str] = []
        lines += self._calls_lines()
        lines += self._latency_lines()
        lines += self._kpi_lines()
        lines += self._audit_lines()
        lines += self._mailbox_lines()
        return "\n".join(lines) + "\n"

    def _calls_lines(self) -> list[str]:
        lines = ["# HELP northstar_tool_calls_total Tool calls by outcome (ok, error, timeout, denied).",
                 "# TYPE northstar_tool_calls_total counter"]
        for tool, series in sorted(self._tools.items()):
            for (op, outcome), n in sorted(series.totals.items()):
                lines.append(f"northstar_tool_calls_total{_labels(tool=tool, operation=op, outcome=outcome)} {n}")
        return lines

    def _latency_lines(self) -> list[str]:
        lines = ["# HELP northstar_tool_call_latency_ms Tool call latency over the retained samples.",
                 "# TYPE northstar_tool_call_latency_ms summary"]
        for tool, series in sorted(self._tools.items()):
            self._prune(series, self.clock())
            by_op: dict[str, list[float]] = {}
            for s in series.samples:
                by_op.setdefault(s.operation, []).append(s.latency_ms)
            for op, values in sorted(by_op.items()):
                values.sort()
                for q in QUANTILES:
                    labels = _labels(tool=tool, operation=op, quantile=str(q))
                    lines.append(f"northstar_tool_call_latency_ms{labels} {quantile(values, q):.3f}")
                base = _labels(tool=tool, operation=op)
                lines.append(f"northstar_tool_call_latency_ms_sum{base} {sum(values):.3f}")
                lines.append(f"northstar_tool_call_latency_ms_count{base} {len(values)}")
        return lines

    def _kpi_lines(self) -> list[str]:
        lines = ["# HELP northstar_kpi_value Last evaluated KPI value (NaN: no data).",
                 "# TYPE northstar_kpi_value gauge"]
        targets = ["# HELP northstar_kpi_target KPI target.", "# TYPE northstar_kpi_target gauge"]
        for (tool, kpi_id, metric), (value, target) in sorted(self._kpi_values.items()):
            labels = _labels(tool=tool, kpi_id=kpi_id, metric=metric)
            lines.append(f"northstar_kpi_value{labels} {'NaN' if value is None else repr(float(value))}")
            targets.append(f"northstar_kpi_target{labels} {float(target)!r}")
        return lines + targets

    def _audit_lines(self) -> list[str]:
        pending = _audit_pending(self.audit)
        if pending is None:
            return []
        return ["# HELP northstar_audit_pending Audit records queued, not yet committed.",
                "# TYPE northstar_audit_pending gauge", f"northstar_audit_pending {pending}"]

    def _mailbox_lines(self) -> list[str]:
        current = [sup() if callable(sup) else sup for sup in self.supervisors]
        rows = [row for sup in current if sup is not None for row in _mailboxes(sup.stats())]
        if not rows:
            return []
        gauges = {"queued": "Messages waiting in the mailbox.", "capacity": "Mailbox capacity.",
                  "in_flight": "Messages being handled."}
        lines = []
        for name, help_text in gauges.items():
            metric = f"northstar_mailbox_{name}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            for sup_name, actor, box in rows:
                value = getattr(box, name, None)
                if isinstance(value, int | float) and math.isfinite(value):
                    lines.append(f"{metric}{_labels(supervisor=sup_name, actor=actor)} {value}")
        return lines


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
