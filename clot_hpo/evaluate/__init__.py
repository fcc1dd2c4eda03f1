"""Evaluation: metrics with confidence intervals, the decision threshold, figures.

Nothing here logs anywhere or loads a model: callers hand the results to a tracker, and
pass in the model (:mod:`clot_hpo.evaluate.holdout` applies one to image files).
"""

from __future__ import annotations

from clot_hpo.evaluate.catalogue import (
    Metric,
    Scored,
    all_metrics,
    format_estimate,
    format_interval,
    get_metric,
    headline_keys,
    metric_keys,
    metric_names,
    register_metric,
    summary_metrics,
    table_metrics,
    unregister_metric,
)
from clot_hpo.evaluate.figures import make_figures
from clot_hpo.evaluate.holdout import (
    LabelledFolder,
    evaluate_model,
    load_labelled_folder,
    predict_image_files,
)
from clot_hpo.evaluate.metrics import (
    THRESHOLD_METHODS,
    binary_metrics,
    choose_threshold,
    confusion_counts,
    expected_calibration_error,
    sensitivity_at_specificity,
    wilson_interval,
)
from clot_hpo.evaluate.paired import (
    PREDICTION_COLUMNS,
    McNemar,
    PairedAuc,
    align,
    delong_test,
    mcnemar_exact,
    read_predictions,
)
from clot_hpo.evaluate.report import EvaluationReport, evaluate_trial, format_table, point_metrics

__all__ = [
    "PREDICTION_COLUMNS",
    "THRESHOLD_METHODS",
    "EvaluationReport",
    "LabelledFolder",
    "McNemar",
    "Metric",
    "PairedAuc",
    "Scored",
    "align",
    "all_metrics",
    "binary_metrics",
    "choose_threshold",
    "confusion_counts",
    "delong_test",
    "evaluate_model",
    "evaluate_trial",
    "expected_calibration_error",
    "format_estimate",
    "format_interval",
    "format_table",
    "get_metric",
    "headline_keys",
    "load_labelled_folder",
    "make_figures",
    "mcnemar_exact",
    "metric_keys",
    "metric_names",
    "point_metrics",
    "predict_image_files",
    "read_predictions",
    "register_metric",
    "sensitivity_at_specificity",
    "summary_metrics",
    "table_metrics",
    "unregister_metric",
    "wilson_interval",
]
