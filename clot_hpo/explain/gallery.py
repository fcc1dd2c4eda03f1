"""A trial's failure gallery: Grad-CAM overlays of its test set, one figure per kind.

Kinds: the most confident true positives (what the model looks at when right), the most
confident false positives and the most confident misses (false negatives). A reviewer sees
in the MLflow UI where a trial fails, and whether it looks at the vessel or at a corner.
The functions here are pure: they take the model, images, labels and probabilities and
return figures; logging them is the caller's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clot_hpo.explain.gradcam import GradCam, overlay

GALLERY_KINDS = ("true_positives", "false_positives", "false_negatives")
_TITLES = {
    "true_positives": "most confident true positives",
    "false_positives": "most confident false positives",
    "false_negatives": "most confident false negatives (missed clots)",
}
DEFAULT_PER_KIND = 4


def select_gallery(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    threshold: float,
    *,
    per_kind: int = DEFAULT_PER_KIND,
) -> dict[str, list[int]]:
    """Indices per kind, most confident first (at most ``per_kind`` each).

    ``p >= threshold`` is a predicted clot, as everywhere in clot-hpo.
    """
    y = np.asarray(labels).astype(int).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(
            f"labels and probabilities must have one entry per image, but got {y.size} and {p.size}"
        )
    predicted = p >= threshold
    index = np.arange(y.size)
    # A stable sort keeps the images' order among equal probabilities (reproducible galleries).
    chosen = {
        "true_positives": index[(y == 1) & predicted][np.argsort(-p[(y == 1) & predicted], kind="stable")],
        "false_positives": index[(y == 0) & predicted][np.argsort(-p[(y == 0) & predicted], kind="stable")],
        "false_negatives": index[(y == 1) & ~predicted][np.argsort(p[(y == 1) & ~predicted], kind="stable")],
    }
    return {kind: [int(i) for i in chosen[kind][:per_kind]] for kind in GALLERY_KINDS}


def _figure(n_panels: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.2 * max(n_panels, 1), 2.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # PNG output without pyplot state (the trial's figures do the same)
    return fig


def failure_gallery(
    model: Any,
    images: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    threshold: float,
    *,
    per_kind: int = DEFAULT_PER_KIND,
    cam: GradCam | None = None,
) -> dict[str, Any]:
    """One matplotlib figure per kind of :data:`GALLERY_KINDS`: Grad-CAM overlays, captioned.

    Args:
        model: the Keras model that produced ``probabilities`` (raw [0, 255] float32 input).
        images: the images, ``(N, H, W, 3)`` at the model's input size, in label order.
        labels: 0/1 per image.
        probabilities: the model's probability per image.
        threshold: the decision threshold (chosen on validation).
        per_kind: overlays per figure.
        cam: a :class:`GradCam` of ``model`` already built (saves building it again).

    Returns:
        ``{kind: Figure}``; a kind with no image gets a figure that says so, so the absence
        of false negatives is visible too.
    """
    chosen = select_gallery(labels, probabilities, threshold, per_kind=per_kind)
    wanted = sorted({i for indices in chosen.values() for i in indices})
    maps: dict[int, np.ndarray] = {}
    if wanted:
        explainer = cam or GradCam(model, compiled=False)  # one call: eager is cheaper than tracing
        _, cams = explainer(np.asarray(images, dtype=np.float32)[wanted])
        maps = dict(zip(wanted, cams, strict=True))
    y = np.asarray(labels).astype(int).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    figures: dict[str, Any] = {}
    for kind in GALLERY_KINDS:
        indices = chosen[kind]
        fig = _figure(len(indices))
        title = f"{_TITLES[kind]} at threshold {threshold:.3f}"
        if not indices:
            ax = fig.add_subplot(1, 1, 1)
            ax.axis("off")
            ax.text(0.5, 0.5, f"none among {y.size} images", ha="center", va="center")
        for k, i in enumerate(indices):
            ax = fig.add_subplot(1, len(indices), k + 1)
            pixels = np.clip(np.asarray(images[i], dtype=np.float32), 0, 255).astype(np.uint8)
            ax.imshow(overlay(pixels, maps[i]))
            ax.set_title(f"#{i}: p={p[i]:.3f}, label {y[i]}", fontsize=8)
            ax.axis("off")
        fig.suptitle(f"{title}\nGrad-CAM: an aid, not a finding", fontsize=9)
        figures[kind] = fig
    return figures


__all__ = ["DEFAULT_PER_KIND", "GALLERY_KINDS", "failure_gallery", "select_gallery"]
