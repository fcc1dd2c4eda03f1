"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DPI = 110
COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#4a5568")


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def reliability_png(curves: Mapping[str, tuple[Any, Any]], *, n_bins: int = 10) -> bytes:
    """Reliability diagram: observed positive rate against mean predicted probability per bin.

    Args:
        curves: backbone -> ``(labels, probabilities)`` of its test predictions.
        n_bins: equal-width bins over [0, 1] (the ECE's bins).
    """
    fig, ax = _figure(6.4, 4.8)
    ax.plot([0, 1], [0, 1], ls="--", color="#718096", lw=1, label="perfect calibration")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for i, (name, (labels, probs)) in enumerate(curves.items()):
        y, p = np.asarray(labels, dtype=float), np.asarray(probs, dtype=float)
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
        xs, ys, ns = [], [], []
        for b in range(n_bins):
            mask = bins == b
            if mask.any():
                xs.append(p[mask].mean())
                ys.append(y[mask].mean())
                ns.append(int(mask.sum()))
        color = COLORS[i % len(COLORS)]
        ax.plot(xs, ys, marker="o", color=color, label=f"{name} (n={y.size})")
        for x, v, n in zip(xs, ys, ns, strict=True):
            ax.annotate(str(n), (x, v), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.set_xticks(edges[::2])
    ax.set(
        xlim=(0, 1),
        ylim=(-0.02, 1.02),
        xlabel="mean predicted probability (bin)",
        ylabel="observed share of clots (bin)",
        title="Reliability on the test split",
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def history_png(points: Sequence[tuple[int, float, str]], *, objective: str, direction: str) -> bytes:
    """Optimisation history: each completed trial's objective by trial number, and the best so far.

    Args:
        points: ``(trial number, objective value, backbone)`` of completed trials.
    """
    fig, ax = _figure(7.2, 4.0)
    backbones = sorted({b for _, _, b in points})
    for i, backbone in enumerate(backbones):
        mine = [(n, v) for n, v, b in points if b == backbone]
        ax.scatter(
            [n for n, _ in mine],
            [v for _, v in mine],
            color=COLORS[i % len(COLORS)],
            label=backbone,
            zorder=3,
        )
    ordered = sorted((n, v) for n, v, _ in points)
    best: list[float] = []
    for _, v in ordered:
        best.append(v if not best else (max(best[-1], v) if direction == "maximize" else min(best[-1], v)))
    ax.step([n for n, _ in ordered], best, where="post", color="#1d2430", lw=1.2, label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers are whole
    ax.set(xlabel="trial number", ylabel=objective, title="Optimisation history (completed trials)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def importances_png(importances: Mapping[str, float]) -> bytes:
    """Horizontal bars of each parameter's importance (fANOVA), largest on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = _figure(6.4, 1.6 + 0.32 * len(items))
    ax.barh([k for k, _ in items], [v for _, v in items], color=COLORS[0])
    ax.set(
        xlabel="importance (share of the objective's variance)",
        xlim=(0, 1),
        title="Hyperparameter importances",
    )
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


__all__ = ["history_png", "importances_png", "reliability_png"]
