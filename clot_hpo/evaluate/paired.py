"""Paired comparisons of two classifiers scored on the same test images.

Every completed trial logs ``test_predictions.csv`` and ``val_predictions.csv`` (columns
``key`` = a content hash of the image, ``label`` 0/1, ``probability``). Two such files are
joined on ``key`` (:func:`align`) and compared:

* :func:`delong_test` — DeLong, DeLong & Clarke-Pearson (1988), *Biometrics* 44:837-845:
  the AUC difference of two correlated ROC curves, its normal-theory 95% interval and the
  two-sided p-value, computed with the fast midrank algorithm of Sun & Xu (2014), *IEEE
  Signal Processing Letters* 21(11):1389-1393. Neither scipy nor statsmodels ships it.
* :func:`mcnemar_exact` — McNemar's exact test on the discordant pairs of two sets of 0/1
  predictions (statsmodels' ``mcnemar(exact=True)``).

Nothing here logs anywhere; callers read the files and hand the results on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

from clot_hpo.errors import DataError
from clot_hpo.evaluate.metrics import as_arrays

__all__ = [
    "PREDICTION_COLUMNS",
    "AccuracyDifference",
    "McNemar",
    "PairedAuc",
    "accuracy_difference",
    "accuracy_difference_independent",
    "align",
    "auc_difference_independent",
    "delong_test",
    "mcnemar_exact",
    "read_predictions",
]

PREDICTION_COLUMNS = ("key", "label", "probability")
"""The columns of ``test_predictions.csv`` / ``val_predictions.csv``, in this order."""

_MAX_LISTED = 5


def _listed(items: Sequence[object]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    rest = len(items) - _MAX_LISTED
    return f"{shown} and {rest} more" if rest > 0 else shown


# ----- predictions files ------------------------------------------------------------------
def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions CSV (``key,label,probability``) and check every row.

    Returns:
        A frame with exactly the columns ``key`` (str), ``label`` (int 0/1) and
        ``probability`` (float in [0, 1]), in file order.

    Raises:
        DataError: (exit code 2) naming the file and the offending rows when the file is
            missing or unreadable, a column is missing, a key is empty or repeated, a label
            is not 0/1 or a probability is not a number in [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    try:
        frame = pd.read_csv(path, dtype={"key": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable predictions CSV ({exc})") from exc
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: a predictions file needs the columns {list(PREDICTION_COLUMNS)}, "
            f"but {missing} are missing (got {list(frame.columns)})"
        )
    if frame.empty:
        raise DataError(f"{path}: a predictions file needs at least one row, but it has none")
    frame = frame[list(PREDICTION_COLUMNS)].copy()
    rows = frame.index.to_numpy() + 2  # 1-based, after the header line: what an editor shows

    keys = frame["key"].astype(str).str.strip()
    empty = rows[(keys == "").to_numpy()]
    if empty.size:
        raise DataError(f"{path}: `key` must not be empty, but it is on rows {_listed(empty.tolist())}")
    repeated = keys[keys.duplicated()].unique().tolist()
    if repeated:
        raise DataError(f"{path}: each `key` must appear once, but these repeat: {_listed(repeated)}")

    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad_label = rows[~labels.isin([0, 1]).to_numpy()]
    if bad_label.size:
        raise DataError(
            f"{path}: `label` must be 0 or 1, but it is not on rows {_listed(bad_label.tolist())}"
        )

    prob = pd.to_numeric(frame["probability"], errors="coerce").astype(np.float64)
    values = prob.to_numpy()
    bad_prob = rows[~(np.isfinite(values) & (values >= 0.0) & (values <= 1.0))]
    if bad_prob.size:
        raise DataError(
            f"{path}: `probability` must be a number in [0, 1], but it is not on rows "
            f"{_listed(bad_prob.tolist())}"
        )
    return pd.DataFrame(
        {"key": keys.to_numpy(dtype=object), "label": labels.astype(np.int64), "probability": values}
    )


def align(pred_a: pd.DataFrame, pred_b: pd.DataFrame, *, names: tuple[str, str] = ("A", "B")) -> pd.DataFrame:
    """Join two prediction frames on ``key`` for a paired comparison.

    Args:
        pred_a: predictions of model A (as :func:`read_predictions` returns them).
        pred_b: predictions of model B on the same images.
        names: how error messages call A and B (a file name or a run id).

    Returns:
        Columns ``key``, ``label``, ``probability_a``, ``probability_b``, sorted by ``key``.

    Raises:
        DataError: (exit code 2) when the two frames do not hold the same keys, or hold a
            key with different labels: they were not scored on the same test set.
    """
    keys_a, keys_b = set(pred_a["key"]), set(pred_b["key"])
    if keys_a != keys_b:
        only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
        raise DataError(
            f"a paired comparison needs the same images on both sides, but {len(only_a)} keys are "
            f"only in {names[0]} ({_listed(only_a)}) and {len(only_b)} only in {names[1]} "
            f"({_listed(only_b)})"
        )
    joined = pred_a[["key", "label", "probability"]].merge(
        pred_b[["key", "label", "probability"]], on="key", suffixes=("_a", "_b"), validate="one_to_one"
    )
    differ = joined.loc[joined["label_a"] != joined["label_b"], "key"].tolist()
    if differ:
        raise DataError(
            f"a paired comparison needs the same label for each image, but {names[0]} and {names[1]} "
            f"disagree on {len(differ)} keys: {_listed(sorted(differ))}"
        )
    out = joined.rename(columns={"label_a": "label"}).drop(columns="label_b")
    return out[["key", "label", "probability_a", "probability_b"]].sort_values("key").reset_index(drop=True)


# ----- DeLong -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedAuc:
    """DeLong's paired test of two AUCs on the same examples.

    ``difference = auc_a - auc_b``; ``[ci_low, ci_high]`` is its two-sided interval at the
    requested ``confidence`` (95% by default); ``p_value`` is two-sided for ``difference == 0``.
    """

    auc_a: float
    auc_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    confidence: float = 0.95


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks of each row of ``x`` (k x n), ties sharing their mean rank (1-based)."""
    return np.asarray(rankdata(x, method="average", axis=1), dtype=np.float64)


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and the structural components V10 (positives) and V01 (negatives), Sun & Xu (2014).

    ``scores`` is k x n (one row per classifier). With ``m`` positives and ``n`` negatives,
    ``T_z`` the midranks in the pooled sample and ``T_x``/``T_y`` those within each class:
    ``AUC = (sum T_z[pos] - m(m+1)/2) / (m n)``, ``V10 = (T_z[pos] - T_x) / n`` and
    ``V01 = 1 - (T_z[neg] - T_y) / m`` — each V10_i is the share of negatives that positive
    i outranks (ties 1/2), each V01_j the share of positives that outrank negative j.
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx, ty = _midranks(pos), _midranks(neg)
    tz = _midranks(np.concatenate([pos, neg], axis=1))
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_test(labels: Any, prob_a: Any, prob_b: Any, *, confidence: float = 0.95) -> PairedAuc:
    """DeLong's test for the difference of two correlated ROC AUCs (fast midrank algorithm).

    Args:
        labels: 0/1 labels, one per example.
        prob_a: model A's positive-class scores for the same examples, in the same order.
        prob_b: model B's scores.
        confidence: the interval's coverage.

    Returns:
        :class:`PairedAuc`. The interval is ``difference +- z * se`` with
        ``se^2 = Var(AUC_a) + Var(AUC_b) - 2 Cov(AUC_a, AUC_b)`` from the structural
        components' sample covariances (``S10/m + S01/n``). When that variance is 0 (the
        same scores on both sides, or both models separating the classes perfectly) the
        interval collapses to the difference and the p-value is 1 for a zero difference.

    Raises:
        ValueError: for inputs of different lengths, labels other than 0/1, scores outside
            [0, 1], or a single class (AUC is undefined), or fewer than 2 examples per class
            (the covariance needs 2).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`0 < confidence < 1` must hold, but got {confidence}")
    y, pa = as_arrays(labels, prob_a)
    _, pb = as_arrays(labels, prob_b)
    m = int(y.sum())
    n = int(y.size - m)
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs at least 2 positives and 2 negatives, but got {m} and {n}")
    aucs, v10, v01 = _delong_components(y, np.vstack([pa, pb]))
    s10 = np.cov(v10)  # k x k, ddof=1 as in DeLong et al.
    s01 = np.cov(v01)
    cov = s10 / m + s01 / n
    contrast = np.array([1.0, -1.0])
    variance = float(contrast @ cov @ contrast)
    difference = float(aucs[0] - aucs[1])
    # Rounding can leave a tiny negative variance for identical score vectors.
    if variance <= 1e-15:
        p_value = 1.0 if abs(difference) < 1e-12 else 0.0
        return PairedAuc(
            auc_a=float(aucs[0]),
            auc_b=float(aucs[1]),
            difference=difference,
            ci_low=difference,
            ci_high=difference,
            p_value=p_value,
            n=int(y.size),
            confidence=confidence,
        )
    se = float(np.sqrt(variance))
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p_value = float(2.0 * norm.sf(abs(difference) / se))
    return PairedAuc(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        difference=difference,
        ci_low=difference - z * se,
        ci_high=difference + z * se,
        p_value=min(1.0, p_value),
        n=int(y.size),
        confidence=confidence,
    )


# ----- McNemar ----------------------------------------------------------------------------
@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two classifiers' accuracies on the same examples.

    ``b`` counts examples A gets right and B wrong, ``c`` those B gets right and A wrong;
    the p-value is the two-sided exact binomial test of ``b`` among ``b + c`` at 1/2.
    """

    b: int
    c: int
    p_value: float
    n: int
    accuracy_a: float
    accuracy_b: float


def mcnemar_exact(labels: Any, pred_a: Any, pred_b: Any) -> McNemar:
    """McNemar's exact test on 0/1 predictions (threshold already applied) of two models.

    Raises:
        ValueError: for inputs of different lengths or values other than 0/1.
    """
    y, a = as_arrays(labels, pred_a)
    _, b_pred = as_arrays(labels, pred_b)
    for name, values in (("pred_a", a), ("pred_b", b_pred)):
        if not np.all((values == 0.0) | (values == 1.0)):
            raise ValueError(f"`{name}` must hold 0/1 predictions (threshold applied), but got other values")
    right_a = a.astype(np.int64) == y
    right_b = b_pred.astype(np.int64) == y
    table = np.array(
        [
            [int(np.sum(right_a & right_b)), int(np.sum(right_a & ~right_b))],
            [int(np.sum(~right_a & right_b)), int(np.sum(~right_a & ~right_b))],
        ]
    )
    b, c = int(table[0, 1]), int(table[1, 0])
    # statsmodels returns p = 1 when b + c == 0 (no discordant pair: no evidence either way).
    result = mcnemar(table, exact=True)
    return McNemar(
        b=b,
        c=c,
        p_value=float(min(1.0, result.pvalue)),
        n=int(y.size),
        accuracy_a=float(right_a.mean()),
        accuracy_b=float(right_b.mean()),
    )


# ----- differences with intervals -------------------------------------------------------------
@dataclass(frozen=True)
class AccuracyDifference:
    """``accuracy_a - accuracy_b`` with its interval and a two-sided p-value."""

    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


def accuracy_difference(
    labels: Any, pred_a: Any, pred_b: Any, *, confidence: float = 0.95
) -> AccuracyDifference:
    """Paired accuracy difference: Wald interval for paired proportions, McNemar's exact p-value.

    With ``b`` (A right, B wrong) and ``c`` (B right, A wrong) among ``n`` examples, the
    difference is ``(b - c) / n`` and its standard error ``sqrt(b + c - (b - c)^2 / n) / n``
    (Agresti, *Categorical Data Analysis*, 3rd ed., 11.1.1); the p-value is
    :func:`mcnemar_exact`'s. No discordant pair gives the interval ``[0, 0]`` and ``p = 1``.
    """
    test = mcnemar_exact(labels, pred_a, pred_b)
    n, b, c = test.n, test.b, test.c
    difference = (b - c) / n
    se = float(np.sqrt(max(0.0, b + c - (b - c) ** 2 / n))) / n
    z = float(norm.ppf(0.5 + confidence / 2.0))
    return AccuracyDifference(
        accuracy_a=test.accuracy_a,
        accuracy_b=test.accuracy_b,
        difference=difference,
        ci_low=max(-1.0, difference - z * se),
        ci_high=min(1.0, difference + z * se),
        p_value=test.p_value,
        n=n,
    )


def accuracy_difference_independent(
    labels_a: Any, pred_a: Any, labels_b: Any, pred_b: Any, *, confidence: float = 0.95
) -> AccuracyDifference:
    """Accuracy difference of two models scored on different test sets (independent samples).

    Newcombe's hybrid score interval and the score test, both from statsmodels
    (``confint_proportions_2indep`` / ``test_proportions_2indep``). ``n`` counts both sets.
    """
    ya, pa = as_arrays(labels_a, pred_a)
    yb, pb = as_arrays(labels_b, pred_b)
    right_a, right_b = int(np.sum(pa.astype(np.int64) == ya)), int(np.sum(pb.astype(np.int64) == yb))
    low, high = confint_proportions_2indep(
        right_a, ya.size, right_b, yb.size, method="newcomb", compare="diff", alpha=1.0 - confidence
    )
    # At an accuracy of exactly 0 or 1 statsmodels divides by zero on the way (the p-value
    # it returns is still finite): keep its RuntimeWarning out of the user's console.
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = float(test_proportions_2indep(right_a, ya.size, right_b, yb.size, method="score").pvalue)
    acc_a, acc_b = right_a / ya.size, right_b / yb.size
    return AccuracyDifference(
        accuracy_a=acc_a,
        accuracy_b=acc_b,
        difference=acc_a - acc_b,
        ci_low=float(low),
        ci_high=float(high),
        p_value=1.0 if not np.isfinite(p_value) else min(1.0, p_value),
        n=int(ya.size + yb.size),
    )


def auc_difference_independent(
    labels_a: Any, prob_a: Any, labels_b: Any, prob_b: Any, *, confidence: float = 0.95
) -> PairedAuc:
    """AUC difference of two models scored on different test sets (independent samples).

    Each AUC's variance is DeLong's (``S10/m + S01/n`` of its own structural components);
    the two are independent, so the difference's variance is their sum. ``n`` counts both sets.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`0 < confidence < 1` must hold, but got {confidence}")
    aucs, variances = [], []
    for labels, prob in ((labels_a, prob_a), (labels_b, prob_b)):
        y, p = as_arrays(labels, prob)
        m, n = int(y.sum()), int(y.size - y.sum())
        if m < 2 or n < 2:
            raise ValueError(
                f"an AUC interval needs at least 2 positives and 2 negatives, but got {m} and {n}"
            )
        auc, v10, v01 = _delong_components(y, p[None, :])
        aucs.append(float(auc[0]))
        variances.append(float(np.var(v10[0], ddof=1) / m + np.var(v01[0], ddof=1) / n))
    difference = aucs[0] - aucs[1]
    se = float(np.sqrt(sum(variances)))
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p_value = float(2.0 * norm.sf(abs(difference) / se)) if se > 0 else (1.0 if difference == 0 else 0.0)
    n_total = int(np.asarray(labels_a).size + np.asarray(labels_b).size)
    return PairedAuc(
        auc_a=aucs[0],
        auc_b=aucs[1],
        difference=difference,
        ci_low=difference - z * se,
        ci_high=difference + z * se,
        p_value=min(1.0, p_value),
        n=n_total,
        confidence=confidence,
    )
