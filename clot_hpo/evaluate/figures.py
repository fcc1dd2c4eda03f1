"""Evaluation figures (matplotlib, drawn with scikit-learn's displays); returned, never saved.

Figures are plain :class:`matplotlib.figure.Figure` objects attached to an Agg canvas, not
pyplot figures: no GUI backend is touched, pyplot's global figure list does not grow, and
dropping the object frees it (``plt.close`` is harmless on them too).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from clot_hpo.evaluate.metrics import ECE_BINS, as_arrays

CLASS_NAMES = ("negative", "positive")


def _figure(width: float = 5.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: PNG output without any pyplot state
    return fig


def confusion_matrix_figure(y: np.ndarray, p: np.ndarray, threshold: float, title: str = "") -> Figure:
    """Counts of the confusion matrix at ``threshold``."""
    fig = _figure()
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        y,
        (p >= threshold).astype(int),
        labels=[0, 1],
        display_labels=list(CLASS_NAMES),
        ax=ax,
        cmap="Blues",
        colorbar=False,
        values_format="d",
    )
    ax.set_title(f"{title}Confusion matrix (threshold {threshold:.3f})")
    return fig


def roc_figure(y: np.ndarray, p: np.ndarray, threshold: float, title: str = "") -> Figure:
    """ROC curve with the operating point of ``threshold`` marked."""
    fig = _figure()
    ax = fig.add_subplot()
    if y.min() == y.max():
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
    else:
        RocCurveDisplay.from_predictions(y, p, ax=ax, name="model", plot_chance_level=True)
        pred = p >= threshold
        tpr = pred[y == 1].mean()
        fpr = pred[y == 0].mean()
        ax.scatter([fpr], [tpr], color="crimson", zorder=3, label=f"threshold {threshold:.3f}")
        ax.legend(loc="lower right")
    ax.set_title(f"{title}ROC curve")
    return fig


def pr_figure(y: np.ndarray, p: np.ndarray, threshold: float, title: str = "") -> Figure:
    """Precision-recall curve with the operating point of ``threshold`` marked."""
    fig = _figure()
    ax = fig.add_subplot()
    if y.sum() == 0:
        ax.text(0.5, 0.5, "PR curve undefined: no positive example", ha="center", va="center")
    else:
        PrecisionRecallDisplay.from_predictions(y, p, ax=ax, name="model", plot_chance_level=True)
        pred = p >= threshold
        if pred.any():
            ax.scatter(
                [pred[y == 1].mean()],
                [y[pred].mean()],
                color="crimson",
                zorder=3,
                label=f"threshold {threshold:.3f}",
            )
        ax.legend(loc="lower left")
    ax.set_title(f"{title}Precision-recall curve")
    return fig


def reliability_figure(y: np.ndarray, p: np.ndarray, title: str = "") -> Figure:
    """Reliability diagram (observed positive rate against mean predicted probability)."""
    fig = _figure()
    ax = fig.add_subplot()
    CalibrationDisplay.from_predictions(y, p, n_bins=ECE_BINS, strategy="uniform", ax=ax, name="model")
    ax.set_title(f"{title}Reliability diagram")
    return fig


def training_curves_figure(history: dict[str, list[float]]) -> Figure:
    """One panel per metric (``loss``, ``auc``, ...) with its training and ``val_`` curves."""
    bases = sorted({k.removeprefix("val_") for k in history if history[k]}, key=lambda k: (k != "loss", k))
    bases = [b for b in bases if b not in ("lr", "learning_rate")] or bases
    ncols = min(3, max(1, len(bases)))
    nrows = max(1, int(np.ceil(len(bases) / ncols)))
    fig = _figure(4.0 * ncols, 3.2 * nrows)
    for i, base in enumerate(bases):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key, style in ((base, "-"), (f"val_{base}", "--")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(
                    epochs,
                    np.asarray(values, dtype=float),
                    style,
                    marker="o",
                    ms=3,
                    label="validation" if key.startswith("val_") else "training",
                )
        ax.set_title(base)
        ax.set_xlabel("epoch")
        ax.legend()
    if not bases:
        fig.add_subplot().text(0.5, 0.5, "no training history", ha="center", va="center")
    return fig


def sample_images_figure(images: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float) -> Figure:
    """A few images with their label and probability (only when the config asks for samples)."""
    n = len(images)
    ncols = min(4, max(1, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig = _figure(2.5 * ncols, 2.7 * nrows)
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        img = np.asarray(images[i], dtype=np.float32)
        ax.imshow(np.clip(img / 255.0 if img.max() > 1.0 else img, 0.0, 1.0))
        pred = "positive" if p[i] >= threshold else "negative"
        ax.set_title(f"label {CLASS_NAMES[int(y[i])]}\np={p[i]:.2f} ({pred})", fontsize=8)
        ax.axis("off")
    return fig


def make_figures(
    y_true: Any,
    y_prob: Any,
    *,
    threshold: float,
    history: dict[str, list[float]] | None = None,
) -> dict[str, Figure]:
    """The evaluation figures of one split, keyed by their artifact file name.

    Returns:
        ``confusion_matrix.png``, ``roc_curve.png``, ``pr_curve.png``,
        ``reliability_diagram.png`` and, when ``history`` (Keras ``History.history``) is
        given, ``training_curves.png``.
    """
    y, p = as_arrays(y_true, y_prob)
    figures = {
        "confusion_matrix.png": confusion_matrix_figure(y, p, threshold),
        "roc_curve.png": roc_figure(y, p, threshold),
        "pr_curve.png": pr_figure(y, p, threshold),
        "reliability_diagram.png": reliability_figure(y, p),
    }
    if history:
        figures["training_curves.png"] = training_curves_figure(history)
    return figures
