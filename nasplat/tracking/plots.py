"""Pareto-front figures: GFLOPs vs the search's objective (whole-body AP for ZoomNAS), every trial
behind the front."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nasplat.files import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class FrontPoint:
    trial: int
    gflops: float
    ap: float
    pareto: bool


def pareto_png(points: Sequence[FrontPoint], budget: float | None, path: Path, title: str,
               cost: str = "GFLOPs", score: str = "whole-body AP") -> Path:
    """Scatter of all trials with the Pareto front as a step line (matplotlib, Agg). `cost`
    names the x axis (the points' `gflops` hold that cost, e.g. predicted latency in ms), `score`
    the y axis (the points' `ap` hold the search's objective)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    rest = [p for p in points if not p.pareto]
    front = sorted((p for p in points if p.pareto), key=lambda p: p.gflops)
    ax.scatter([p.gflops for p in rest], [p.ap for p in rest], s=12, c="0.65", label="trials")
    ax.step([p.gflops for p in front], [p.ap for p in front], where="post", c="tab:red", lw=1.5)
    ax.scatter([p.gflops for p in front], [p.ap for p in front], s=24, c="tab:red", label="Pareto front")
    if budget is not None:
        ax.axvline(budget, ls="--", c="tab:blue", lw=1, label=f"budget {budget:g} {cost}")
    ax.set_xlabel(cost)
    ax.set_ylabel(score)
    ax.set_title(title)
    return save_png(fig, ax, path)


def save_png(fig: Any, ax: Any, path: Path) -> Path:
    """Finish a matplotlib scatter (grid, legend at the lower right) and write it to `path` as a
    PNG, atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(buf.getvalue(), path)
    return path


def pareto_html(points: Sequence[FrontPoint], budget: float | None, path: Path, title: str,
                cost: str = "GFLOPs", score: str = "whole-body AP") -> Path:
    """Interactive plotly figure, self-contained: plotly.js is embedded (the page works offline,
    on an air-gapped cluster too); hover shows the trial number."""
    import plotly.graph_objects as go

    rest = [p for p in points if not p.pareto]
    front = sorted((p for p in points if p.pareto), key=lambda p: p.gflops)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p.gflops for p in rest],
            y=[p.ap for p in rest],
            mode="markers",
            name="trials",
            marker={"color": "#aaaaaa", "size": 6},
            text=[f"trial {p.trial}" for p in rest],
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p.gflops for p in front],
            y=[p.ap for p in front],
            mode="lines+markers",
            line={"shape": "hv", "color": "#d62728"},
            name="Pareto front",
            text=[f"trial {p.trial}" for p in front],
        )
    )
    if budget is not None:
        fig.add_vline(x=budget, line_dash="dash", line_color="#1f77b4", annotation_text=f"budget {budget:g}")
    fig.update_layout(title=title, xaxis_title=cost, yaxis_title=score, template="plotly_white")
    atomic_write_text(fig.to_html(include_plotlyjs=True, full_html=True), path)
    return path
