"""Metrics with intervals, threshold choice and degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from clot_hpo.errors import ConfigError
from clot_hpo.evaluate import (
    binary_metrics,
    choose_threshold,
    confusion_counts,
    expected_calibration_error,
    metric_names,
    sensitivity_at_specificity,
    wilson_interval,
)
from clot_hpo.evaluate.metrics import fast_average_precision, fast_roc_auc

INTERVAL_METRICS = ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "auc", "pr_auc")


def _scores(n: int = 200, seed: int = 0, separation: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + separation * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
    return y, p


def test_metrics_equal_what_the_confusion_counts_imply() -> None:
    y, p = _scores()
    m = binary_metrics(y, p, threshold=0.45, n_bootstrap=200)
    c = confusion_counts(y, p, 0.45)
    tn, fp, fn, tp = c["tn"], c["fp"], c["fn"], c["tp"]
    assert tn + fp + fn + tp == len(y)
    assert m["accuracy"] == pytest.approx((tp + tn) / len(y))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["recall"] == m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["f1"] == pytest.approx(f1_score(y, p >= 0.45))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))


def test_every_metric_and_interval_is_present_and_contains_its_point_estimate() -> None:
    for seed in range(5):
        y, p = _scores(n=30, seed=seed)  # small samples: the widening rule matters here
        m = binary_metrics(y, p, threshold=0.5, n_bootstrap=200, seed=seed)
        assert set(metric_names()) <= set(m)
        for name in INTERVAL_METRICS:
            assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"], (seed, name)
            assert 0.0 <= m[f"{name}_ci_low"] <= m[f"{name}_ci_high"] <= 1.0
        assert all(math.isfinite(v) for v in m.values())


def test_wilson_intervals_match_statsmodels() -> None:
    y, p = _scores(n=150, seed=4)
    m = binary_metrics(y, p, threshold=0.5, confidence=0.9, n_bootstrap=100)
    c = confusion_counts(y, p, 0.5)
    expected = {
        "accuracy": (c["tp"] + c["tn"], len(y)),
        "precision": (c["tp"], c["tp"] + c["fp"]),
        "sensitivity": (c["tp"], c["tp"] + c["fn"]),
        "specificity": (c["tn"], c["tn"] + c["fp"]),
    }
    for name, (count, nobs) in expected.items():
        low, high = proportion_confint(count, nobs, alpha=0.1, method="wilson")
        assert (m[f"{name}_ci_low"], m[f"{name}_ci_high"]) == pytest.approx((low, high)), name
    assert wilson_interval(7, 20, 0.95) == pytest.approx(
        proportion_confint(7, 20, alpha=0.05, method="wilson")
    )


def test_bootstrap_interval_narrows_with_more_data_and_is_reproducible() -> None:
    small = binary_metrics(*_scores(n=40, seed=1), threshold=0.5, n_bootstrap=300, seed=3)
    large = binary_metrics(*_scores(n=1000, seed=1), threshold=0.5, n_bootstrap=300, seed=3)
    width = lambda m: m["auc_ci_high"] - m["auc_ci_low"]  # noqa: E731
    assert width(large) < width(small)
    again = binary_metrics(*_scores(n=40, seed=1), threshold=0.5, n_bootstrap=300, seed=3)
    assert again == small


@pytest.mark.parametrize("seed", range(4))
def test_fast_auc_and_average_precision_match_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.random(80), 1)  # many ties
    assert fast_roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert fast_average_precision(y, p) == pytest.approx(average_precision_score(y, p))


def test_youden_threshold_on_a_constructed_example() -> None:
    # Negatives at 0.1..0.4, positives at 0.35..0.9. At 0.5: J = 4/5 + 4/4 - 1 = 0.8 (every
    # positive but 0.35 caught, no false alarm); at 0.35: J = 5/5 + 3/4 - 1 = 0.75.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6, 0.8, 0.9])
    assert choose_threshold(y, p, method="youden") == pytest.approx(0.5)
    c = confusion_counts(y, p, 0.5)
    assert (c["tn"], c["fp"], c["fn"], c["tp"]) == (4, 0, 1, 4)


def test_target_sensitivity_threshold_is_the_highest_that_reaches_the_target() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6, 0.8, 0.9])
    t = choose_threshold(y, p, method="target_sensitivity", target_sensitivity=0.95)
    assert t == pytest.approx(0.35)  # catching all 5 positives needs 0.35
    assert binary_metrics(y, p, threshold=t, n_bootstrap=0)["sensitivity"] == 1.0
    t80 = choose_threshold(y, p, method="target_sensitivity", target_sensitivity=0.8)
    assert t80 == pytest.approx(0.5)  # 4/5 suffices at the more specific 0.5


def test_unknown_threshold_method_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="median"):
        choose_threshold([0, 1], [0.2, 0.8], method="median")


def test_no_positive_prediction_gives_the_documented_precision_convention() -> None:
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.2, 0.4])
    m = binary_metrics(y, p, threshold=0.9, n_bootstrap=50)
    assert m["precision"] == 0.0 and (m["precision_ci_low"], m["precision_ci_high"]) == (0.0, 1.0)
    assert m["sensitivity"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == 1.0
    assert all(math.isfinite(v) for v in m.values())


@pytest.mark.parametrize("label", [0, 1])
def test_a_single_class_never_produces_nan(label: int) -> None:
    y = np.full(12, label)
    p = np.linspace(0.05, 0.95, 12)
    m = binary_metrics(y, p, threshold=0.5, n_bootstrap=50)
    assert all(math.isfinite(v) for v in m.values())
    assert m["auc"] == 0.5 and (m["auc_ci_low"], m["auc_ci_high"]) == (0.0, 1.0)
    assert m["pr_auc"] == float(label)
    assert choose_threshold(y, p) == 0.5
    assert sensitivity_at_specificity(y, p, 0.9) == 0.0


def test_bad_inputs_are_rejected_with_what_was_received() -> None:
    with pytest.raises(ValueError, match="same length"):
        binary_metrics([0, 1], [0.5], threshold=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_metrics([0, 1], [0.5, 1.5], threshold=0.5)
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics([0, 2], [0.5, 0.5], threshold=0.5)
    with pytest.raises(ValueError, match="at least one"):
        binary_metrics([], [], threshold=0.5)


def test_sensitivity_at_specificity_on_a_constructed_example() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.6, 0.8, 0.9, 0.95])
    # Specificity 1 allows only scores above 0.7: 3 of 4 positives.
    assert sensitivity_at_specificity(y, p, 1.0) == pytest.approx(0.75)
    # Specificity 0.75 allows the threshold 0.6: every positive.
    assert sensitivity_at_specificity(y, p, 0.75) == pytest.approx(1.0)


def test_expected_calibration_error() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)  # calibrated by construction
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.clip(p + 0.3, 0, 1)) > 0.2
    # One bin by hand: all scores 0.9, half positive -> |0.5 - 0.9|.
    assert expected_calibration_error([1, 0, 1, 0], [0.9] * 4) == pytest.approx(0.4)


def test_wilson_interval_contains_its_estimate_at_zero_and_one() -> None:
    # statsmodels' Wilson bound for 0/3 is 5.6e-17, not 0: a recall of 0 fell outside its interval.
    for nobs in range(1, 60):
        for count in (0, nobs):
            low, high = wilson_interval(count, nobs)
            assert low <= count / nobs <= high, (count, nobs)
    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
