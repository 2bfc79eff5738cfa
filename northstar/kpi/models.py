"""KPI bindings: a target on one metric of one tool over a rolling window (pydantic, an edge type)."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Metric = Literal["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate", "calls"]
Comparison = Literal["lte", "gte"]

TOOL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
KPI_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
WINDOW_PATTERN = r"^([1-9][0-9]{0,5})([smhd])$"
MAX_WINDOW_SECONDS = 90 * 86_400

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_WINDOW_RE = re.compile(WINDOW_PATTERN)


def default_comparison(metric: str) -> Comparison:
    """Latencies and error rates are ceilings; a call count is a floor."""
    return "gte" if metric == "calls" else "lte"


def window_to_seconds(window: str) -> int:
    match = _WINDOW_RE.match(window)
    if match is None:
        raise ValueError(f"window must look like 30s, 5m, 1h or 7d (pattern {WINDOW_PATTERN})")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class KpiBinding(BaseModel):
    """Binds ``metric`` of ``tool_name`` to ``target``, compared with ``comparison`` over ``window``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tool_name: str = Field(pattern=TOOL_NAME_PATTERN)
    kpi_id: str = Field(pattern=KPI_ID_PATTERN)
    metric: Metric
    target: float
    comparison: Comparison = "lte"
    window: str = "5m"
    owner: str = Field(min_length=1, max_length=128)
    description: str | None = Field(default=None, max_length=2048)

    @model_validator(mode="before")
    @classmethod
    def _default_comparison(cls, value: Any) -> Any:
        metric = value.get("metric") if isinstance(value, dict) else None
        if isinstance(value, dict) and value.get("comparison") is None and isinstance(metric, str):
            return {**value, "comparison": default_comparison(value["metric"])}
        return value

    @field_validator("window")
    @classmethod
    def _check_window(cls, window: str) -> str:
        if window_to_seconds(window) > MAX_WINDOW_SECONDS:
            raise ValueError(f"window must be at most {MAX_WINDOW_SECONDS // 86_400}d")
        return window

    @model_validator(mode="after")
    def _check_target(self) -> KpiBinding:
        if not math.isfinite(self.target) or self.target < 0:
            raise ValueError("target must be a finite number >= 0")
        if self.metric == "error_rate" and self.target > 1:
            raise ValueError("an error_rate target is a fraction between 0 and 1")
        return self

    @property
    def window_seconds(self) -> int:
        return window_to_seconds(self.window)

    @property
    def resource_id(self) -> str:
        """The store key: ``"<tool_name>:<kpi_id>"`` (neither part may contain a colon)."""
        return f"{self.tool_name}:{self.kpi_id}"
