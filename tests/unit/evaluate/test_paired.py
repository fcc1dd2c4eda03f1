"""Paired comparisons: DeLong's AUC test, McNemar's exact test, predictions files and their join.

DeLong is checked against references computed another way: sklearn's AUC, the placement
values counted pair by pair (DeLong et al.'s definition, O(m n), no ranks), and a paired
bootstrap of the AUC difference on the same predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from clot_hpo.errors import DataError
from clot_hpo.evaluate.metrics import fast_roc_auc
from clot_hpo.evaluate.paired import (
    accuracy_difference,
    accuracy_difference_independent,
    align,
    auc_difference_independent,
    delong_test,
    mcnemar_exact,
    read_predictions,
)


def _two_models(n: int = 240, seed: int = 7, gap: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated score vectors; ``gap`` makes A better than B.

    Scores are rounded to 2 decimals so ties occur (the midrank algorithm must handle them).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    shared = rng.normal(0, 1, n)
    a = 1.0 * (y - 0.5) * (1 + gap) + shared + rng.normal(0, 0.6, n)
    b = 1.0 * (y - 0.5) + shared + rng.normal(0, 0.6, n)
    squash = lambda v: np.round(1 / (1 + np.exp(-v)), 2)  # noqa: E731
    return y, squash(a), squash(b)


def _delong_by_pairs(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong's difference and its variance from placement values counted over all pairs."""
    out = []
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = out
    m, n = v10a.size, v01a.size
    var = np.var(v10a - v10b, ddof=1) / m + np.var(v01a - v01b, ddof=1) / n
    return auc_a - auc_b, var


def test_delong_aucs_match_sklearn_and_the_pairwise_definition() -> None:
    y, a, b = _two_models(gap=0.3)
    result = delong_test(y, a, b)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    diff, var = _delong_by_pairs(y, a, b)
    assert result.difference == pytest.approx(diff, abs=1e-12)
    se = np.sqrt(var)
    assert result.ci_high - result.ci_low == pytest.approx(2 * 1.959963984540054 * se, rel=1e-9)
    assert result.p_value == pytest.approx(2 * norm.sf(abs(diff) / se), rel=1e-9)
    assert result.n == y.size


def test_delong_interval_agrees_with_a_paired_bootstrap_on_the_same_predictions() -> None:
    y, a, b = _two_models(n=300, seed=11, gap=0.4)
    result = delong_test(y, a, b)
    rng = np.random.default_rng(0)
    diffs = []  # Mann-Whitney AUCs of resampled pairs: no variance formula involved
    for _ in range(2000):
        idx = rng.integers(0, y.size, y.size)
        if y[idx].min() == y[idx].max():
            continue
        diffs.append(fast_roc_auc(y[idx], a[idx]) - fast_roc_auc(y[idx], b[idx]))
    boot_se = float(np.std(diffs, ddof=1))
    delong_se = (result.ci_high - result.ci_low) / (2 * 1.959963984540054)
    assert delong_se == pytest.approx(boot_se, rel=0.15)
    low, high = np.quantile(diffs, [0.025, 0.975])
    assert result.ci_low == pytest.approx(low, abs=0.25 * (high - low))
    assert result.ci_high == pytest.approx(high, abs=0.25 * (high - low))
    # The same conclusion about significance either way.
    assert (result.ci_low > 0) == (low > 0)


def test_delong_is_antisymmetric_and_detects_a_clear_difference() -> None:
    y, a, b = _two_models(n=400, seed=3, gap=1.5)
    ab, ba = delong_test(y, a, b), delong_test(y, b, a)
    assert ab.difference == pytest.approx(-ba.difference)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert ab.ci_low == pytest.approx(-ba.ci_high)
    assert ab.ci_low > 0 and ab.p_value < 0.01


def test_delong_on_identical_predictions_finds_no_difference() -> None:
    y, a, _ = _two_models()
    result = delong_test(y, a, a.copy())
    assert result.difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0


def test_delong_refuses_a_single_class_and_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="at least 2 positives and 2 negatives, but got 0 and 4"):
        delong_test([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0.2, 0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="same length"):
        delong_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.2, 0.2])


def test_mcnemar_counts_discordant_pairs_and_matches_the_exact_binomial_test() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0])
    pa = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1])  # wrong on the last 2
    pb = np.array([0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0])  # wrong on 0,1,2,5,6
    result = mcnemar_exact(y, pa, pb)
    assert (result.b, result.c) == (5, 2)
    assert result.p_value == pytest.approx(binomtest(5, 7, 0.5).pvalue)
    assert result.accuracy_a == pytest.approx(10 / 12)
    assert result.accuracy_b == pytest.approx(7 / 12)
    assert result.n == 12
    same = mcnemar_exact(y, pa, pa)
    assert (same.b, same.c, same.p_value) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="0/1 predictions"):
        mcnemar_exact(y, pa * 0.5, pb)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_predictions_returns_typed_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", "key,label,probability,extra\nab12,1,0.9,x\n0007,0,0.25,y\n")
    frame = read_predictions(path)
    assert list(frame.columns) == ["key", "label", "probability"]
    assert frame["key"].tolist() == ["ab12", "0007"]  # a numeric-looking hash keeps its zeros
    assert frame["label"].tolist() == [1, 0]
    assert frame["probability"].tolist() == [0.9, 0.25]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key,label\na,1\n", r"columns \['key', 'label', 'probability'\], but \['probability'\] are missing"),
        ("key,label,probability\n", "at least one row"),
        (
            "key,label,probability\na,1,0.5\nb,2,0.5\nc,0,0.1\n",
            "`label` must be 0 or 1, but it is not on rows 3",
        ),
        (
            "key,label,probability\na,1,0.5\nb,0,1.5\nc,0,\n",
            r"`probability` must be a number in \[0, 1\].*rows 3, 4",
        ),
        ("key,label,probability\na,1,0.5\na,0,0.5\n", "each `key` must appear once, but these repeat: a"),
        ("key,label,probability\n,1,0.5\n", "`key` must not be empty"),
    ],
)
def test_read_predictions_names_the_file_and_the_rule(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message) as info:
        read_predictions(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 2


def test_read_predictions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="predictions file not found"):
        read_predictions(tmp_path / "absent.csv")


def test_align_joins_on_key_and_refuses_other_test_sets() -> None:
    a = pd.DataFrame({"key": ["k2", "k1", "k3"], "label": [0, 1, 1], "probability": [0.2, 0.8, 0.6]})
    b = pd.DataFrame({"key": ["k1", "k3", "k2"], "label": [1, 1, 0], "probability": [0.7, 0.4, 0.1]})
    joined = align(a, b)
    assert joined["key"].tolist() == ["k1", "k2", "k3"]
    assert joined["label"].tolist() == [1, 0, 1]
    assert joined["probability_a"].tolist() == [0.8, 0.2, 0.6]
    assert joined["probability_b"].tolist() == [0.7, 0.1, 0.4]

    other = b.assign(key=["k1", "k3", "k9"])
    with pytest.raises(DataError, match=r"1 keys are only in cand \(k2\) and 1 only in champ \(k9\)"):
        align(a, other, names=("cand", "champ"))
    relabelled = b.assign(label=[1, 0, 0])
    with pytest.raises(DataError, match="disagree on 1 keys: k3"):
        align(a, relabelled)


def test_accuracy_difference_is_the_paired_wald_interval_with_mcnemars_p() -> None:
    y = np.array([1] * 30 + [0] * 30)
    pa = y.copy()
    pa[:3] = 0  # A wrong on 3
    pb = y.copy()
    pb[:12] = 0  # B wrong on 12 (including A's 3)
    result = accuracy_difference(y, pa, pb)
    b, c, n = 9, 0, 60
    se = np.sqrt(b + c - (b - c) ** 2 / n) / n
    assert result.difference == pytest.approx((b - c) / n)
    assert result.ci_low == pytest.approx((b - c) / n - 1.959963984540054 * se)
    assert result.p_value == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
    assert (result.accuracy_a, result.accuracy_b) == (57 / 60, 48 / 60)


def test_independent_auc_difference_matches_bootstraps_of_each_set() -> None:
    ya, a, _ = _two_models(n=300, seed=21)
    yb, _, b = _two_models(n=260, seed=22)
    result = auc_difference_independent(ya, a, yb, b)
    assert result.difference == pytest.approx(roc_auc_score(ya, a) - roc_auc_score(yb, b))
    rng = np.random.default_rng(1)
    variances = []
    for y, p in ((ya, a), (yb, b)):
        draws = []
        for _ in range(800):
            idx = rng.integers(0, y.size, y.size)
            draws.append(fast_roc_auc(y[idx], p[idx]))
        variances.append(np.var(draws, ddof=1))
    se = (result.ci_high - result.ci_low) / (2 * 1.959963984540054)
    assert se == pytest.approx(np.sqrt(sum(variances)), rel=0.15)
    assert result.n == ya.size + yb.size


def test_independent_accuracy_difference_uses_newcombes_interval() -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    ya, yb = np.array([1, 0] * 50), np.array([1, 0] * 40)
    pa, pb = ya.copy(), yb.copy()
    pb[:20] = 1 - pb[:20]  # B wrong on 20 of 80
    result = accuracy_difference_independent(ya, pa, yb, pb)
    low, high = confint_proportions_2indep(100, 100, 60, 80, method="newcomb", compare="diff")
    assert (result.accuracy_a, result.accuracy_b) == (1.0, 0.75)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    assert result.ci_low > 0 and result.p_value < 0.01
