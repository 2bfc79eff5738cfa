"""KpiBinding validation (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from northstar.kpi.models import KpiBinding

BASE: dict[str, Any] = {"tool_name": "echo", "kpi_id": "p95", "metric": "latency_p95_ms", "target": 250,
                        "window": "5m", "owner": "team-a"}


def test_a_valid_binding_with_derived_fields() -> None:
    b = KpiBinding(**BASE)
    assert (b.comparison, b.window_seconds, b.resource_id, b.description) == ("lte", 300, "echo:p95", None)
    assert KpiBinding.model_validate(b.model_dump(mode="json")) == b


@pytest.mark.parametrize(("window", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("24h", 86_400),
                                                  ("7d", 604_800)])
def test_windows(window: str, seconds: int) -> None:
    assert KpiBinding(**{**BASE, "window": window}).window_seconds == seconds


def test_comparison_defaults_per_metric_and_can_be_given() -> None:
    assert KpiBinding(**{**BASE, "metric": "calls", "target": 10}).comparison == "gte"
    assert KpiBinding(**{**BASE, "metric": "error_rate", "target": 0.01}).comparison == "lte"
    assert KpiBinding(**{**BASE, "comparison": "gte"}).comparison == "gte"


@pytest.mark.parametrize(
    "change",
    [
        {"metric": "latency_p90_ms"},
        {"comparison": "eq"},
        {"window": "5"}, {"window": "0m"}, {"window": "1w"}, {"window": "-5m"}, {"window": "100d"},
        {"tool_name": "bad:name"}, {"tool_name": ""}, {"kpi_id": "Has Space"},
        {"target": -1}, {"target": float("nan")}, {"metric": "error_rate", "target": 2},
        {"owner": ""}, {"unexpected": 1},
    ],
)
def test_invalid_bindings_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        KpiBinding(**{**BASE, **change})


def test_bindings_are_immutable() -> None:
    b = KpiBinding(**BASE)
    with pytest.raises(ValidationError):
        b.target = 1  # type: ignore[misc]
