"""Binary-classification metrics with confidence intervals, and the decision threshold.

Conventions (the same everywhere in clot-hpo):

* A score ``p >= threshold`` is predicted positive (a clot).
* Proportions (accuracy, precision, recall = sensitivity, specificity) carry Wilson score
  intervals from statsmodels' ``proportion_confint(method="wilson")``.
* AUC (ROC), PR AUC (average precision) and F1 carry percentile bootstrap intervals: pairs
  ``(label, score)`` are resampled with replacement; resamples holding a single class are
  skipped (AUC is undefined on them). Should a percentile interval exclude its point
  estimate (possible on tiny, skewed samples), it is widened to include it.
* PPV and NPV are reported at the deployment prevalence (``evaluation.prevalence``; else the
  split's own, where they equal the observed ``tp / (tp + fp)`` and ``tn / (tn + fn)``), by
  Bayes' rule from sensitivity and specificity; their interval is Bayes' rule applied to the
  lower and to the upper Wilson bounds of both (conservative: see :func:`_predictive`).
* Degenerate cases never produce NaN (MLflow and JSON readers choke on it):

  - a proportion whose denominator is 0 (precision with no positive prediction,
    sensitivity with no positive label, specificity with no negative label) is ``0.0``
    with the uninformative interval ``[0, 1]``; F1 with ``2tp + fp + fn == 0`` is ``0.0``;
  - with a single class in ``y_true``, AUC is ``0.5`` (chance) and PR AUC is the
    prevalence (its chance level), each with the interval ``[0, 1]``;
  - the threshold falls back to ``0.5`` when it cannot be chosen (single class).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_curve
from statsmodels.stats.proportion import proportion_confint

from clot_hpo.errors import ConfigError
from clot_hpo.evaluate.catalogue import (
    CI_HIGH,
    CI_LOW,
    Metric,
    Scored,
    all_metrics,
    register_metric,
)

THRESHOLD_METHODS = ("youden", "target_sensitivity")
SENSITIVITY_RULE = "sensitivity@"  # `sensitivity@0.95`: target_sensitivity with its own target
FALLBACK_THRESHOLD = 0.5
ECE_BINS = 10


# ----- input checks -----------------------------------------------------------------------
def as_arrays(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as int 0/1 and scores as float64, both 1-D and of equal, non-zero length."""
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_prob, dtype=np.float64).reshape(-1)
    if y.size == 0:
        raise ValueError("metrics need at least one example, but got 0")
    if y.size != p.size:
        raise ValueError(f"`y_true` and `y_prob` must have the same length, but got {y.size} and {p.size}")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"`y_true` must hold only 0 and 1, but got the values {sorted(labels)}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"`y_prob` must be finite, but {int((~np.isfinite(p)).sum())} scores are not")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"`y_prob` must lie in [0, 1], but got the range [{p.min()}, {p.max()}]")
    return y.astype(np.int64), p


def _single_class(y: np.ndarray) -> bool:
    return bool(y.min() == y.max())


# ----- threshold --------------------------------------------------------------------------
def threshold_rule(method: str, target_sensitivity: float = 0.95) -> tuple[str, float]:
    """``(method, target)`` of a threshold rule: ``sensitivity@0.9`` is ``("target_sensitivity", 0.9)``.

    Raises:
        ConfigError: the rule is none of ``youden``, ``target_sensitivity``, ``sensitivity@S``.
    """
    if method.startswith(SENSITIVITY_RULE):
        text = method[len(SENSITIVITY_RULE) :]
        try:
            return "target_sensitivity", float(text)
        except ValueError:
            raise ConfigError(
                f"a threshold rule sensitivity@S needs a number S, but got {method!r}"
            ) from None
    if method not in THRESHOLD_METHODS:
        raise ConfigError(
            f"threshold method must be one of {list(THRESHOLD_METHODS)} or sensitivity@S, but got {method!r}"
        )
    return method, target_sensitivity


def describe_threshold_rule(method: str, target_sensitivity: float = 0.95) -> str:
    """The rule in words: ``Youden's J`` or ``sensitivity ≥ 0.95``."""
    kind, target = threshold_rule(method, target_sensitivity)
    return "Youden's J" if kind == "youden" else f"sensitivity ≥ {target:g}"


def choose_threshold(
    y_true: Any, y_prob: Any, *, method: str = "youden", target_sensitivity: float = 0.95
) -> float:
    """The decision threshold, chosen on the validation split only.

    Args:
        y_true: 0/1 labels of the validation split.
        y_prob: predicted probabilities of the positive class.
        method: ``"youden"`` maximises Youden's J = sensitivity + specificity - 1 (ties go
            to the higher threshold, the more specific one); ``"target_sensitivity"`` takes
            the highest threshold whose sensitivity reaches ``target_sensitivity``, which
            maximises specificity under that constraint; ``"sensitivity@0.95"`` is the same
            with its own target.
        target_sensitivity: the sensitivity to reach with ``"target_sensitivity"``.

    Returns:
        A threshold in [0, 1]; one of the observed scores, so ``p >= threshold``
        reproduces the chosen ROC point. ``0.5`` when ``y_true`` holds a single class.
    """
    method, target_sensitivity = threshold_rule(method, target_sensitivity)
    if not 0.0 < target_sensitivity <= 1.0:
        raise ConfigError(f"`0 < target_sensitivity <= 1` must hold, but got {target_sensitivity}")
    y, p = as_arrays(y_true, y_prob)
    if _single_class(y):
        return FALLBACK_THRESHOLD
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # thresholds[0] is +inf (nothing predicted positive): never a usable choice.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if method == "youden":
        idx = int(np.argmax(tpr - fpr))  # first maximum = highest threshold among ties
    else:
        reached = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
        idx = int(reached[0])  # tpr reaches 1 at the last threshold, so this is never empty
    return float(np.clip(thresholds[idx], 0.0, 1.0))


# ----- counts and point metrics -----------------------------------------------------------
def confusion_counts(y_true: Any, y_prob: Any, threshold: float) -> dict[str, Any]:
    """``{"tn", "fp", "fn", "tp", "threshold"}`` for predictions ``p >= threshold``."""
    y, p = as_arrays(y_true, y_prob)
    pred = p >= threshold
    pos = y == 1
    return {
        "tn": int(np.sum(~pred & ~pos)),
        "fp": int(np.sum(pred & ~pos)),
        "fn": int(np.sum(~pred & pos)),
        "tp": int(np.sum(pred & pos)),
        "threshold": float(threshold),
    }


def wilson_interval(count: int, nobs: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``count / nobs``; ``(0, 1)`` when ``nobs == 0``."""
    if nobs <= 0:
        return 0.0, 1.0
    low, high = proportion_confint(count, nobs, alpha=1.0 - confidence, method="wilson")
    # At 0 or nobs the formula's rounding can leave the bound a hair past the estimate
    # (5.6e-17 > 0.0): the interval must contain its point estimate.
    point = count / nobs
    return float(min(max(0.0, low), point)), float(max(min(1.0, high), point))


def wilson_width(p: float, n: int, confidence: float = 0.95) -> float:
    """The width of Wilson's interval for a proportion ``p`` observed on ``n`` trials (1 when ``n == 0``)."""
    if n <= 0:
        return 1.0
    z = float(norm.ppf(0.5 + confidence / 2.0))
    return float(2.0 * z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / (1.0 + z * z / n))


def positives_for_width(sensitivity: float, width: float, confidence: float = 0.95) -> int:
    """The fewest positives whose Wilson interval of ``sensitivity`` is at most ``width`` wide.

    The report's "too few positives" note: how many positives a test split needs for a
    sensitivity interval that narrow, at the sensitivity observed.
    """
    if not 0.0 < width <= 1.0:
        raise ValueError(f"`0 < width <= 1` must hold, but got {width}")
    high = 1
    while wilson_width(sensitivity, high, confidence) > width:
        high *= 2
    low = high // 2
    while high - low > 1:  # the width falls as n grows: bisect between low (too wide) and high
        mid = (low + high) // 2
        low, high = (mid, high) if wilson_width(sensitivity, mid, confidence) > width else (low, mid)
    return high


def _ratio(num: int, den: int) -> float:
    return float(num / den) if den > 0 else 0.0


def fast_roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank formula (ties count 1/2); equals sklearn's value."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fast_average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (step-wise PR AUC, tied scores form one step); equals sklearn's."""
    n_pos = int(y.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    tp = np.cumsum(y_sorted)
    # Keep the last index of each run of tied scores: one point per distinct threshold.
    last = np.r_[np.flatnonzero(np.diff(p_sorted)), p_sorted.size - 1]
    tp = tp[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = ECE_BINS) -> float:
    """ECE over ``n_bins`` equal-width bins: sum of |accuracy - confidence| weighted by bin size.

    "Accuracy" here is the observed positive rate of the bin and "confidence" its mean
    predicted probability (the reliability-diagram definition for a binary classifier).
    """
    y, p = as_arrays(y_true, y_prob)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # p == 1.0 goes in the last bin
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def _f1(tp: int, fp: int, fn: int) -> float:
    return _ratio(2 * tp, 2 * tp + fp + fn)


# ----- the catalogue's entries --------------------------------------------------------------------
# The order is the tables' order. Proportions are (count, n): Wilson intervals.
def _accuracy(s: Scored) -> tuple[int, int]:
    tn, _, _, tp = s.counts
    return tp + tn, s.y.size


def _precision(s: Scored) -> tuple[int, int]:
    _, fp, _, tp = s.counts
    return tp, tp + fp


def _sensitivity(s: Scored) -> tuple[int, int]:
    _, _, fn, tp = s.counts
    return tp, tp + fn


def _specificity(s: Scored) -> tuple[int, int]:
    tn, fp, _, _ = s.counts
    return tn, tn + fp


def _ppv(sensitivity: float, specificity: float, prevalence: float) -> float | None:
    """Bayes: P(clot | positive call) at ``prevalence``; None when nothing would be called positive."""
    hits = sensitivity * prevalence
    den = hits + (1.0 - specificity) * (1.0 - prevalence)
    return hits / den if den > 0 else None


def _npv(sensitivity: float, specificity: float, prevalence: float) -> float | None:
    """Bayes: P(no clot | negative call) at ``prevalence``; None when nothing would be called negative."""
    clear = specificity * (1.0 - prevalence)
    den = clear + (1.0 - sensitivity) * prevalence
    return clear / den if den > 0 else None


def _predictive(s: Scored, value: Any) -> tuple[float, float, float]:
    """A predictive value at the deployment prevalence, its interval from Bayes on the Wilson bounds.

    PPV and NPV both rise with sensitivity and with specificity, so the value at the lower
    (upper) bounds of both Wilson intervals is the lower (upper) bound: a conservative interval
    (its coverage is at least that of the two intervals together), which holds whatever the
    test split's own prevalence. Undefined values (nothing called positive, or negative) are
    ``0`` with the interval ``[0, 1]``, like precision.
    """
    tn, fp, fn, tp = s.counts
    (sens, sens_lo, sens_hi), (spec, spec_lo, spec_hi) = (
        (_ratio(tp, tp + fn), *wilson_interval(tp, tp + fn, s.confidence)),
        (_ratio(tn, tn + fp), *wilson_interval(tn, tn + fp, s.confidence)),
    )
    prevalence = s.deployment_prevalence
    point = value(sens, spec, prevalence)
    if point is None or tp + fn == 0 or tn + fp == 0:
        return (0.0 if point is None else point), 0.0, 1.0
    low, high = value(sens_lo, spec_lo, prevalence), value(sens_hi, spec_hi, prevalence)
    return point, min(point, 0.0 if low is None else low), max(point, 1.0 if high is None else high)


def _f1_of(s: Scored) -> float:
    _, fp, fn, tp = s.counts
    return _f1(tp, fp, fn)


def _auc(s: Scored) -> float:
    return 0.5 if s.single_class else fast_roc_auc(s.y, s.p)


def _pr_auc(s: Scored) -> float:
    return float(s.y.mean()) if s.single_class else fast_average_precision(s.y, s.p)


def _brier(s: Scored) -> float:
    return float(np.mean((s.p - s.y) ** 2))


def _ece(s: Scored) -> float:
    return expected_calibration_error(s.y, s.p)


for _entry in (
    Metric("accuracy", "Accuracy", _accuracy, interval="wilson", summary=True),
    Metric("precision", "Precision", _precision, interval="wilson"),
    Metric("recall", "Recall", _sensitivity, interval="wilson"),
    Metric("sensitivity", "Sensitivity", _sensitivity, interval="wilson", summary=True),
    Metric("specificity", "Specificity", _specificity, interval="wilson", summary=True),
    Metric(
        "ppv",
        "PPV",
        lambda s: _predictive(s, _ppv),
        interval="derived",
        description="positive predictive value at evaluation.prevalence (else the split's own)",
    ),
    Metric(
        "npv",
        "NPV",
        lambda s: _predictive(s, _npv),
        interval="derived",
        description="negative predictive value at evaluation.prevalence (else the split's own)",
    ),
    Metric("auc", "AUC", _auc, interval="bootstrap", summary=True, headline=True),
    Metric("f1", "F1", _f1_of, interval="bootstrap"),
    Metric("pr_auc", "PR AUC", _pr_auc, interval="bootstrap"),
    Metric("brier", "Brier score", _brier, direction="minimize", table=False),
    Metric("ece", "ECE", _ece, direction="minimize", table=False),
):
    register_metric(_entry)


def _bootstrap(
    scored: Scored, metrics: tuple[Metric, ...], *, n_bootstrap: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of ``metrics`` (paired resampling of label and score)."""
    rng = np.random.default_rng(seed)
    y, p = scored.y, scored.p
    n = y.size
    stats: dict[str, list[float]] = {m.name: [] for m in metrics}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, size=n)
        yb = y[idx]
        if _single_class(yb):
            continue
        resample = Scored(yb, p[idx], scored.threshold, scored.confidence, scored.prevalence)
        for m in metrics:
            value = m.compute(resample)
            if value is not None:
                stats[m.name].append(float(value))
    alpha = 1.0 - scored.confidence
    out: dict[str, tuple[float, float]] = {}
    for name, values in stats.items():
        if len(values) < 2:
            out[name] = (0.0, 1.0)
        else:
            low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
            out[name] = (float(low), float(high))
    return out


def _estimate(metric: Metric, scored: Scored) -> tuple[float, float | None, float | None] | None:
    """A metric's value and, unless bootstrapped or without one, its interval."""
    raw = metric.compute(scored)
    if raw is None:
        return None
    if metric.interval == "wilson":
        num, den = raw
        return (_ratio(num, den), *wilson_interval(num, den, scored.confidence))
    if metric.interval == "derived":
        value, low, high = raw
        return float(value), float(low), float(high)
    return float(raw), None, None


def binary_metrics(
    y_true: Any,
    y_prob: Any,
    *,
    threshold: float,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
    prevalence: float | None = None,
) -> dict[str, float]:
    """Every metric of the catalogue on one split, with intervals (conventions: module docstring).

    Args:
        y_true, y_prob: labels (0/1) and scores.
        threshold: ``p >= threshold`` is positive.
        confidence: the level of every interval.
        n_bootstrap: resamples behind the bootstrap intervals (0: the interval is ``[0, 1]``).
        seed: seeds the bootstrap.
        prevalence: the deployment prevalence of the predictive values (None: the split's own).

    Returns:
        Each catalogue metric by name (``accuracy, precision, ..., auc, pr_auc, brier, ece``)
        and ``<name>_ci_low`` / ``<name>_ci_high`` for those with an interval. Every value
        is a finite float.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`0 < confidence < 1` must hold, but got {confidence}")
    if n_bootstrap < 0:
        raise ValueError(f"`n_bootstrap >= 0` must hold, but got {n_bootstrap}")
    if prevalence is not None and not 0.0 < prevalence < 1.0:
        raise ValueError(f"`0 < prevalence < 1` must hold, but got {prevalence}")
    y, p = as_arrays(y_true, y_prob)
    scored = Scored(y, p, float(threshold), confidence, prevalence)
    out: dict[str, float] = {}
    for metric in all_metrics():
        estimate = _estimate(metric, scored)
        if estimate is None:
            continue
        out[metric.name] = estimate[0]
        if estimate[1] is not None and estimate[2] is not None:
            out[metric.name + CI_LOW], out[metric.name + CI_HIGH] = estimate[1], estimate[2]
    booted = tuple(m for m in all_metrics() if m.interval == "bootstrap" and m.name in out)
    intervals = (
        {m.name: (0.0, 1.0) for m in booted}
        if scored.single_class
        else _bootstrap(scored, booted, n_bootstrap=n_bootstrap, seed=seed)
    )
    for name, (low, high) in intervals.items():
        point = out[name]
        # A percentile interval may exclude its point estimate on tiny, skewed samples.
        out[name + CI_LOW] = min(low, point)
        out[name + CI_HIGH] = max(high, point)
    return out


def sensitivity_at_specificity(y_true: Any, y_prob: Any, specificity: float) -> float:
    """The highest sensitivity among thresholds whose specificity is at least ``specificity``.

    A search objective: "how many clots do we catch when at most ``1 - specificity`` of the
    clean images raise an alarm". ``0.0`` when ``y_true`` holds a single class.
    """
    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"`0 <= specificity <= 1` must hold, but got {specificity}")
    y, p = as_arrays(y_true, y_prob)
    if _single_class(y):
        return 0.0
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    ok = (1.0 - fpr) >= specificity - 1e-12
    return float(tpr[ok].max())  # the first ROC point (nothing positive) always qualifies
