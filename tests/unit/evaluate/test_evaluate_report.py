"""Trial evaluation: the threshold comes from validation, figures are pictures, the table."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from clot_hpo.config import EvaluationConfig
from clot_hpo.evaluate import binary_metrics, choose_threshold, confusion_counts, evaluate_trial, make_figures

HISTORY = {
    "loss": [0.9, 0.6, 0.5],
    "val_loss": [1.0, 0.7, 0.65],
    "auc": [0.6, 0.75, 0.8],
    "val_auc": [0.55, 0.7, 0.72],
}


def _split(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 + 0.4 * y + shift + rng.normal(0, 0.15, n), 0, 1)
    return y, p


def _png_size(fig: Figure) -> tuple[int, int]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    with Image.open(buf) as img:
        return img.size


def test_make_figures_returns_pictures_without_leaking_pyplot_figures() -> None:
    y, p = _split(60, 0)
    before = plt.get_fignums()
    figs = make_figures(y, p, threshold=0.5, history=HISTORY)
    assert set(figs) == {
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
        "reliability_diagram.png",
        "training_curves.png",
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        w, h = _png_size(fig)
        assert w > 100 and h > 100, name
    assert plt.get_fignums() == before
    assert "training_curves.png" not in make_figures(y, p, threshold=0.5, history=None)
    # The confusion matrix shows the counts at the threshold.
    texts = {t.get_text() for t in figs["confusion_matrix.png"].axes[0].texts}
    c = confusion_counts(y, p, 0.5)
    assert {str(c[k]) for k in ("tn", "fp", "fn", "tp")} <= texts


def test_make_figures_survives_a_single_class() -> None:
    figs = make_figures(np.zeros(10, int), np.linspace(0, 1, 10), threshold=0.5)
    assert all(_png_size(f)[0] > 0 for f in figs.values())


def test_threshold_is_chosen_on_validation_and_applied_to_test() -> None:
    y_val, p_val = _split(120, 1)
    y_test, p_test = _split(80, 2, shift=0.1)  # shifted scores: test's own optimum differs
    cfg = EvaluationConfig(bootstrap_samples=100)
    report = evaluate_trial(y_val, p_val, y_test, p_test, cfg, history=HISTORY, seed=5)
    t = choose_threshold(y_val, p_val)
    assert report.threshold == pytest.approx(t)
    assert t != pytest.approx(choose_threshold(y_test, p_test))
    expected_test = binary_metrics(y_test, p_test, threshold=t, n_bootstrap=100, seed=6)
    expected_val = binary_metrics(y_val, p_val, threshold=t, n_bootstrap=100, seed=5)
    for name, value in expected_test.items():
        assert report.metrics[f"test_{name}"] == pytest.approx(value), name
    for name, value in expected_val.items():
        assert report.metrics[f"val_{name}"] == pytest.approx(value), name
    cm = report.artifacts["confusion_matrix.json"]
    assert {k: cm[k] for k in ("tn", "fp", "fn", "tp", "threshold")} == confusion_counts(y_test, p_test, t)
    assert cm["split"] == "test"
    assert report.artifacts["val_confusion_matrix.json"]["tp"] == confusion_counts(y_val, p_val, t)["tp"]
    assert "training_curves.png" in report.figures
    assert report.splits == ["val", "test"]


def test_target_sensitivity_rule_from_the_config() -> None:
    y_val, p_val = _split(100, 3)
    cfg = EvaluationConfig(threshold="target_sensitivity", target_sensitivity=0.9, bootstrap_samples=100)
    report = evaluate_trial(y_val, p_val, None, None, cfg)
    assert report.metrics["val_sensitivity"] >= 0.9
    assert report.threshold == pytest.approx(
        choose_threshold(y_val, p_val, method="target_sensitivity", target_sensitivity=0.9)
    )


def test_validation_only_and_the_markdown_table() -> None:
    y_val, p_val = _split(50, 4)
    report = evaluate_trial(y_val, p_val, None, None, EvaluationConfig(bootstrap_samples=100))
    assert not any(k.startswith("test_") for k in report.metrics)
    assert report.artifacts["confusion_matrix.json"]["split"] == "val"
    table = report.table()
    lines = table.splitlines()
    assert lines[0].startswith(
        "| Split | Accuracy | Precision | Recall | Sensitivity | Specificity | PPV | NPV | AUC"
    )
    row = next(line for line in lines if line.startswith("| Validation"))
    assert f"{report.metrics['val_accuracy']:.3f} ({report.metrics['val_accuracy_ci_low']:.3f}–" in row
    assert f"{report.metrics['val_auc']:.3f}" in row
    assert row.rstrip(" |").endswith("50")  # the n column
    assert "Test" not in table.split("\n\n")[0]


def test_sample_images_only_when_the_config_asks() -> None:
    y_val, p_val = _split(20, 5)
    images = np.random.default_rng(0).uniform(0, 255, (20, 16, 16, 3)).astype(np.float32)
    off = evaluate_trial(
        y_val, p_val, None, None, EvaluationConfig(bootstrap_samples=100), sample_images=images
    )
    assert "sample_images.png" not in off.figures
    on = evaluate_trial(
        y_val,
        p_val,
        None,
        None,
        EvaluationConfig(bootstrap_samples=100, log_sample_images=3),
        sample_images=images,
    )
    assert len(on.figures["sample_images.png"].axes) == 3


def test_mismatched_test_arguments_are_rejected() -> None:
    y, p = _split(10, 6)
    with pytest.raises(ValueError, match="both"):
        evaluate_trial(y, p, y, None, EvaluationConfig())
