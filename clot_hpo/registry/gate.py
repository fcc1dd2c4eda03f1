"""The promotion gate: the alias moves only on proof that the candidate is better.

A point value that is higher proves nothing on a test set of a few hundred images: two
models that differ by noise take turns as champion. The gate compares the candidate with
the current champion on the **same test images** (their ``test_predictions.csv`` files,
joined on the image's content hash) with a paired test, and moves the alias only when the
95% interval of the difference lies above zero (or above ``min_delta``):

* ``auc`` (default): DeLong's paired test of the AUC difference
  (:func:`clot_hpo.evaluate.paired.delong_test`);
* ``accuracy``: the paired accuracy difference at each model's own threshold, with
  McNemar's exact p-value (:func:`clot_hpo.evaluate.paired.accuracy_difference`).

Optional floors on the candidate alone (``min_sensitivity`` at its threshold, ``max_ece``)
must also hold, first champion included. Models tested on different data (dataset digests
differ, or the keys/labels do not match) cannot be compared pairwise: the gate refuses
unless ``allow_different_test_sets``, and then compares them as independent samples.

Nothing here talks to MLflow: :mod:`clot_hpo.registry.promotion` reads the evidence and
records the :class:`GateDecision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from clot_hpo.errors import ConfigError, DataError
from clot_hpo.tracking.tags import (
    TAG_GATE_CHAMPION,
    TAG_GATE_DECISION,
    TAG_GATE_DIFFERENCE,
    TAG_GATE_INTERVAL,
    TAG_GATE_METRIC,
    TAG_GATE_P_VALUE,
    TAG_GATE_REASON,
    TAG_GATE_RULE,
)

GATE_METRICS = ("auc", "accuracy")
CONFIDENCE = 0.95
FIRST = "first champion"
PROMOTED = "promoted"
KEPT = "kept"  # the difference is not proven
BLOCKED = "blocked"  # a floor failed
REFUSED = "refused"  # different test sets


@dataclass(frozen=True)
class GateRule:
    """What the candidate must show (``clot-hpo promote``'s gate options)."""

    metric: str = "auc"
    min_delta: float = 0.0
    min_sensitivity: float | None = None
    max_ece: float | None = None
    allow_different_test_sets: bool = False

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ConfigError(f"--gate-metric must be one of {list(GATE_METRICS)}, but got {self.metric!r}")
        if not -1.0 < self.min_delta < 1.0:
            raise ConfigError(f"`-1 < --min-delta < 1` must hold, but got {self.min_delta}")
        if self.min_sensitivity is not None and not 0.0 <= self.min_sensitivity <= 1.0:
            raise ConfigError(f"`0 <= --min-sensitivity <= 1` must hold, but got {self.min_sensitivity}")
        if self.max_ece is not None and not 0.0 <= self.max_ece <= 1.0:
            raise ConfigError(f"`0 <= --max-ece <= 1` must hold, but got {self.max_ece}")

    def describe(self) -> str:
        """The rule in one line (recorded with the decision; a rerun with another rule decides again)."""
        parts = [f"{self.metric} 95% CI low > {self.min_delta:g}"]
        if self.min_sensitivity is not None:
            parts.append(f"sensitivity >= {self.min_sensitivity:g}")
        if self.max_ece is not None:
            parts.append(f"ECE <= {self.max_ece:g}")
        if self.allow_different_test_sets:
            parts.append("different test sets allowed")
        return "; ".join(parts)


@dataclass(frozen=True)
class Evidence:
    """One model's test predictions and how to read them."""

    version: str  # the registered version ("" for a candidate not registered yet)
    predictions: pd.DataFrame  # key, label, probability
    threshold: float
    digest: str | None  # the dataset digest of the study that tested it

    def predicted(self, frame: pd.DataFrame | None = None, column: str = "probability") -> np.ndarray:
        """0/1 decisions at this model's threshold (``p >= threshold``)."""
        source = self.predictions if frame is None else frame
        scores: np.ndarray = source[column].to_numpy(dtype=np.float64)
        return (scores >= self.threshold).astype(np.int64)


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided, with the numbers behind it."""

    decision: str  # FIRST, PROMOTED, KEPT, BLOCKED or REFUSED
    metric: str
    champion_version: str | None
    reason: str
    rule: str
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    paired: bool = True

    @property
    def moves(self) -> bool:
        """Whether the alias moves to the candidate."""
        return self.decision in (FIRST, PROMOTED)

    def tags(self) -> dict[str, str]:
        """The version tags that record the decision."""
        out = {
            TAG_GATE_DECISION: self.decision,
            TAG_GATE_METRIC: self.metric,
            TAG_GATE_CHAMPION: self.champion_version or "none",
            TAG_GATE_REASON: self.reason,
            TAG_GATE_RULE: self.rule,
            TAG_GATE_DIFFERENCE: "" if self.difference is None else f"{self.difference:.6f}",
            TAG_GATE_INTERVAL: ""
            if self.ci_low is None or self.ci_high is None
            else f"[{self.ci_low:.6f}, {self.ci_high:.6f}]",
            TAG_GATE_P_VALUE: "" if self.p_value is None else f"{self.p_value:.6g}",
        }
        return out

    def line(self, version: str) -> str:
        """The decision in one printed line."""
        return f"gate: version {version} {self.decision}: {self.reason}"


def _floors(candidate: Evidence, rule: GateRule) -> str | None:
    """Why the candidate fails a floor, or None."""
    # clot_hpo.evaluate (scipy, statsmodels, matplotlib) is imported when a promotion needs
    # it, not by every command that imports the registry (`predict` starts faster).
    from clot_hpo.evaluate.metrics import confusion_counts, expected_calibration_error

    frame = candidate.predictions
    y = frame["label"].to_numpy(dtype=np.int64)
    p = frame["probability"].to_numpy(dtype=np.float64)
    failed = []
    if rule.min_sensitivity is not None:
        c = confusion_counts(y, p, candidate.threshold)
        positives = c["tp"] + c["fn"]
        sensitivity = c["tp"] / positives if positives else 0.0
        if sensitivity < rule.min_sensitivity:
            failed.append(
                f"test sensitivity {sensitivity:.4f} at threshold {candidate.threshold:.3f} is below "
                f"--min-sensitivity {rule.min_sensitivity:g}"
            )
    if rule.max_ece is not None:
        ece = expected_calibration_error(y, p)
        if ece > rule.max_ece:
            failed.append(f"test ECE {ece:.4f} is above --max-ece {rule.max_ece:g}")
    return "; ".join(failed) or None


def _different_sets(candidate: Evidence, champion: Evidence) -> str | None:
    """Why the two were not tested on the same images, or None."""
    from clot_hpo.evaluate.paired import align

    if not candidate.digest or not champion.digest:
        return (
            f"the dataset digest of {'the candidate' if not candidate.digest else 'the champion'} "
            "is not recorded, so the test sets cannot be shown to be the same"
        )
    if candidate.digest != champion.digest:
        return (
            f"the candidate was tested on dataset {candidate.digest[:12]} and champion version "
            f"{champion.version} on dataset {champion.digest[:12]} (dataset digests differ)"
        )
    try:
        align(candidate.predictions, champion.predictions, names=("the candidate", "the champion"))
    except DataError as exc:
        return f"same dataset digest but different test images: {exc}"
    return None


def decide(candidate: Evidence, champion: Evidence | None, rule: GateRule) -> GateDecision:
    """Whether the alias moves from ``champion`` (None: there is none) to ``candidate``.

    Raises:
        ValueError: a test set with a single class (no AUC), from the statistics.
    """
    from clot_hpo.evaluate.paired import (
        accuracy_difference,
        accuracy_difference_independent,
        align,
        auc_difference_independent,
        delong_test,
    )

    described = rule.describe()
    champ_version = champion.version if champion is not None else None
    floor = _floors(candidate, rule)
    if floor is not None:
        return GateDecision(BLOCKED, rule.metric, champ_version, floor, described)
    if champion is None:
        return GateDecision(FIRST, rule.metric, None, "there was no champion", described)
    different = _different_sets(candidate, champion)
    if different is not None and not rule.allow_different_test_sets:
        return GateDecision(
            REFUSED,
            rule.metric,
            champ_version,
            f"{different}; pass --allow-different-test-sets to compare them as independent samples",
            described,
        )
    stat: Any
    if different is None:
        joined = align(candidate.predictions, champion.predictions, names=("the candidate", "the champion"))
        y = joined["label"].to_numpy()
        if rule.metric == "auc":
            stat = delong_test(y, joined["probability_a"], joined["probability_b"], confidence=CONFIDENCE)
            how = "DeLong paired"
        else:
            pred_a = candidate.predicted(joined, "probability_a")
            pred_b = champion.predicted(joined, "probability_b")
            stat = accuracy_difference(y, pred_a, pred_b, confidence=CONFIDENCE)
            how = "paired, McNemar exact p"
        n = f"n={stat.n} paired test images"
    else:
        cf, hf = candidate.predictions, champion.predictions
        if rule.metric == "auc":
            stat = auc_difference_independent(
                cf["label"], cf["probability"], hf["label"], hf["probability"], confidence=CONFIDENCE
            )
            how = "independent samples, DeLong variances"
        else:
            stat = accuracy_difference_independent(
                cf["label"], candidate.predicted(), hf["label"], champion.predicted(), confidence=CONFIDENCE
            )
            how = "independent samples, Newcombe interval"
        n = f"n={stat.n} test images in two different sets"
    numbers = (
        f"{rule.metric} difference {stat.difference:+.4f}, 95% CI [{stat.ci_low:+.4f}, {stat.ci_high:+.4f}], "
        f"p={stat.p_value:.3g} ({how}; {n}) against champion version {champion.version}"
    )
    proven = stat.ci_low > rule.min_delta
    bound = "zero" if rule.min_delta == 0 else f"--min-delta {rule.min_delta:g}"
    reason = (
        f"{numbers}: the interval lies above {bound}"
        if proven
        else f"{numbers}: the interval does not lie above {bound}, so the difference is not proven"
    )
    return GateDecision(
        PROMOTED if proven else KEPT,
        rule.metric,
        champion.version,
        reason,
        described,
        difference=float(stat.difference),
        ci_low=float(stat.ci_low),
        ci_high=float(stat.ci_high),
        p_value=float(stat.p_value),
        paired=different is None,
    )


__all__ = [
    "BLOCKED",
    "FIRST",
    "GATE_METRICS",
    "KEPT",
    "PROMOTED",
    "REFUSED",
    "Evidence",
    "GateDecision",
    "GateRule",
    "decide",
]
