"""Evaluation of one trial: threshold on validation, metrics of both splits, the product table."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from clot_hpo.config.schema import EvaluationConfig
from clot_hpo.evaluate.catalogue import CI_HIGH, CI_LOW, format_estimate, interval_note, table_metrics
from clot_hpo.evaluate.figures import make_figures, sample_images_figure
from clot_hpo.evaluate.metrics import as_arrays, binary_metrics, choose_threshold, confusion_counts
from clot_hpo.render.markdown import markdown_table

SPLIT_TITLES = {"val": "Validation", "test": "Test"}


def format_table(
    rows: dict[str, dict[str, float]],
    *,
    prefixes: dict[str, str] | None = None,
    counts: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The product's table as Markdown: one row per split, a column per table metric of the catalogue.

    Args:
        rows: row title -> metrics dict.
        prefixes: row title -> key prefix inside that dict (``"val_"``), default none.
        counts: row title -> confusion counts; adds an ``n`` column when given.
    """
    prefixes = prefixes or {}
    columns = table_metrics()
    head = ["Split", *(m.label for m in columns)]
    if counts:
        head.append("n")
    body = []
    for title, metrics in rows.items():
        prefix = prefixes.get(title, "")
        cells = [title, *(format_estimate(metrics, prefix + m.name) for m in columns)]
        if counts:
            c = counts.get(title) or {}
            cells.append(str(sum(int(c.get(k, 0)) for k in ("tn", "fp", "fn", "tp"))))
        body.append(cells)
    return "\n".join(markdown_table(head, body, numeric_from=1))


@dataclass
class EvaluationReport:
    """What the evaluation of one trial produced.

    Attributes:
        metrics: ``threshold`` and ``val_*`` / ``test_*`` metrics with their intervals.
        artifacts: JSON artifacts by file name: ``confusion_matrix.json`` (the test split,
            or the validation split when there is no test split) and
            ``val_confusion_matrix.json``.
        figures: matplotlib figures by file name (drawn on the test split when present).
        method: how the threshold was chosen; confidence: the interval level;
        n_bootstrap: resamples behind the bootstrap intervals; prevalence: where PPV and NPV
        are taken (None: each split's own).
    """

    metrics: dict[str, float]
    artifacts: dict[str, dict[str, Any]]
    figures: dict[str, Any] = field(default_factory=dict)
    method: str = "youden"
    confidence: float = 0.95
    n_bootstrap: int = 1000
    prevalence: float | None = None

    @property
    def threshold(self) -> float:
        """The decision threshold chosen on the validation split."""
        return float(self.metrics["threshold"])

    @property
    def splits(self) -> list[str]:
        """The evaluated splits, ``["val"]`` or ``["val", "test"]``."""
        return [s for s in ("val", "test") if f"{s}_accuracy" in self.metrics]

    def table(self) -> str:
        """The product's table (Markdown) with a line on how it was computed."""
        rows = {SPLIT_TITLES[s]: self.metrics for s in self.splits}
        prefixes = {SPLIT_TITLES[s]: f"{s}_" for s in self.splits}
        counts = {
            SPLIT_TITLES[s]: self.artifacts.get(f"{s}_confusion_matrix.json")
            or (self.artifacts.get("confusion_matrix.json") if s == "test" else None)
            or {}
            for s in self.splits
        }
        note = (
            f"\n\nThreshold {self.threshold:.3f} chosen on the validation split ({self.method}). "
            + interval_note(self.confidence, self.n_bootstrap, self.prevalence)
        )
        return format_table(rows, prefixes=prefixes, counts=counts) + note

    def as_dict(self) -> dict[str, Any]:
        """Metrics and confusion counts, JSON-ready (figures left out)."""
        return {"metrics": dict(self.metrics), "confusion_matrices": dict(self.artifacts)}


def evaluate_trial(
    y_val: Any,
    p_val: Any,
    y_test: Any | None,
    p_test: Any | None,
    cfg: EvaluationConfig,
    *,
    history: dict[str, list[float]] | None = None,
    seed: int = 0,
    sample_images: np.ndarray | None = None,
    figures: bool = True,
) -> EvaluationReport:
    """Evaluate one trial: the threshold comes from validation and is applied to test.

    Args:
        y_val, p_val: validation labels (0/1) and predicted probabilities.
        y_test, p_test: the same for the test split, or None to evaluate validation only.
        cfg: the experiment's ``evaluation`` section (threshold rule, confidence level,
            bootstrap resamples, how many sample images to draw).
        history: Keras ``History.history``, drawn as ``training_curves.png``.
        seed: seeds the bootstrap, so a trial's intervals are reproducible.
        sample_images: images of the figure split (test, else validation) in the order of
            its labels; drawn as ``sample_images.png`` only when
            ``cfg.log_sample_images > 0`` (patient images stay out of tracking otherwise).
        figures: False skips drawing (nobody will see them: the study is not tracked).
    """
    if (y_test is None) != (p_test is None):
        raise ValueError("`y_test` and `p_test` must both be given or both be None")
    yv, pv = as_arrays(y_val, p_val)
    threshold = choose_threshold(yv, pv, method=cfg.threshold, target_sensitivity=cfg.target_sensitivity)
    metrics_at = partial(
        binary_metrics,
        threshold=threshold,
        confidence=cfg.confidence_level,
        n_bootstrap=cfg.bootstrap_samples,
        prevalence=cfg.prevalence,
    )
    metrics: dict[str, float] = {"threshold": threshold}
    metrics.update({f"val_{k}": v for k, v in metrics_at(yv, pv, seed=seed).items()})
    val_counts = confusion_counts(yv, pv, threshold)
    artifacts: dict[str, dict[str, Any]] = {"val_confusion_matrix.json": {**val_counts, "split": "val"}}
    fig_y, fig_p = yv, pv
    if y_test is not None:
        yt, pt = as_arrays(y_test, p_test)
        metrics.update({f"test_{k}": v for k, v in metrics_at(yt, pt, seed=seed + 1).items()})
        artifacts["confusion_matrix.json"] = {**confusion_counts(yt, pt, threshold), "split": "test"}
        fig_y, fig_p = yt, pt
    else:
        artifacts["confusion_matrix.json"] = {**val_counts, "split": "val"}
    drawn = make_figures(fig_y, fig_p, threshold=threshold, history=history) if figures else {}
    if figures and cfg.log_sample_images > 0 and sample_images is not None and len(sample_images) > 0:
        k = min(cfg.log_sample_images, len(sample_images), len(fig_y))
        drawn["sample_images.png"] = sample_images_figure(sample_images[:k], fig_y[:k], fig_p[:k], threshold)
    return EvaluationReport(
        metrics=metrics,
        artifacts=artifacts,
        figures=drawn,
        method=cfg.threshold,
        confidence=cfg.confidence_level,
        n_bootstrap=cfg.bootstrap_samples,
        prevalence=cfg.prevalence,
    )


def point_metrics(
    y_val: Any, p_val: Any, y_test: Any, p_test: Any, cfg: EvaluationConfig
) -> dict[str, float]:
    """The threshold and both splits' metrics without intervals, as :func:`evaluate_trial` gives them.

    No bootstrap: cheap enough for the search's objective and a trial's outcome, which need
    them before the intervals and figures are drawn.

    Args:
        y_val, p_val: validation labels (0/1) and predicted probabilities (the threshold's split).
        y_test, p_test: the same for the test split.
        cfg: the experiment's ``evaluation`` section.

    Returns:
        ``threshold`` and ``val_<metric>`` / ``test_<metric>`` for each metric.
    """
    threshold = choose_threshold(
        y_val, p_val, method=cfg.threshold, target_sensitivity=cfg.target_sensitivity
    )
    points = {"threshold": threshold}
    for split, (y, p) in {"val": (y_val, p_val), "test": (y_test, p_test)}.items():
        values = binary_metrics(
            y,
            p,
            threshold=threshold,
            confidence=cfg.confidence_level,
            n_bootstrap=0,
            prevalence=cfg.prevalence,
        )
        points.update({f"{split}_{k}": v for k, v in values.items() if not k.endswith((CI_LOW, CI_HIGH))})
    return points
