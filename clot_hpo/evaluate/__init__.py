"""Evaluation: metrics with confidence intervals, the decision threshold, figures.

Nothing here logs anywhere: callers hand the results to a tracker.
"""

from __future__ import annotations

from clot_hpo.evaluate.figures import make_figures
from clot_hpo.evaluate.metrics import (
    METRIC_NAMES,
    THRESHOLD_METHODS,
    binary_metrics,
    choose_threshold,
    confusion_counts,
    expected_calibration_error,
    sensitivity_at_specificity,
    wilson_interval,
)
from clot_hpo.evaluate.report import EvaluationReport, evaluate_trial, format_table

__all__ = [
    "METRIC_NAMES",
    "THRESHOLD_METHODS",
    "EvaluationReport",
    "binary_metrics",
    "choose_threshold",
    "confusion_counts",
    "evaluate_trial",
    "expected_calibration_error",
    "format_table",
    "make_figures",
    "sensitivity_at_specificity",
    "wilson_interval",
]
