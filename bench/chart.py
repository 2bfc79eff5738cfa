"""The PNG chart: grouped bars per flow for the gateway, both SDK baselines and the ceiling (c=32 req/s, c=1 p50)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.flows import KINDS
from bench.protocol import FLOWS

COLORS = {"gateway": "#1f77b4", "baseline-json": "#ff7f0e", "baseline-sse": "#ffbb78", "ceiling": "#7f7f7f"}
PANELS = (("c32_rps", "throughput at c=32 (req/s, higher is better)"),
          ("c1_p50_ms", "p50 latency at c=1 (ms, lower is better)"))


def draw(flows: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = flows["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(KINDS)
    for ax, (name, label) in zip(axes, PANELS, strict=True):
        for i, kind in enumerate(KINDS):
            values = [summary[f]["medians"][kind].get(name) or 0.0 for f in FLOWS]
            xs = [x + (i - (len(KINDS) - 1) / 2) * width for x in range(len(FLOWS))]
            bars = ax.bar(xs, values, width, label=kind, color=COLORS[kind])
            ax.bar_label(bars, fmt="%.0f" if name.endswith("rps") else "%.2f", fontsize=7)
        ax.set_xticks(range(len(FLOWS)), FLOWS)
        ax.margins(y=0.15)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(KINDS), frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
