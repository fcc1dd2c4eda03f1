"""Evaluation: metrics with confidence intervals, the decision threshold, figures.

Nothing here logs anywhere or loads a model: callers hand the results to a tracker, and
pass in the model (:mod:`clot_hpo.evaluate.holdout` applies one to image files).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import clot_hpo.evaluate.metrics  # noqa: F401 - registers the built-in metrics in the catalogue
from clot_hpo.util import lazy_exports

# Lazy: importing the catalogue (the CLI, the study process) must not load Matplotlib through
# the figures; the metrics are imported at once, as their module fills the catalogue.
if TYPE_CHECKING:  # the one list of exports: lazy_exports reads it (util.lazy_exports)
    from clot_hpo.evaluate.catalogue import Metric as Metric
    from clot_hpo.evaluate.catalogue import Scored as Scored
    from clot_hpo.evaluate.catalogue import all_metrics as all_metrics
    from clot_hpo.evaluate.catalogue import format_estimate as format_estimate
    from clot_hpo.evaluate.catalogue import format_interval as format_interval
    from clot_hpo.evaluate.catalogue import get_metric as get_metric
    from clot_hpo.evaluate.catalogue import headline_keys as headline_keys
    from clot_hpo.evaluate.catalogue import metric_keys as metric_keys
    from clot_hpo.evaluate.catalogue import metric_names as metric_names
    from clot_hpo.evaluate.catalogue import register_metric as register_metric
    from clot_hpo.evaluate.catalogue import summary_metrics as summary_metrics
    from clot_hpo.evaluate.catalogue import table_metrics as table_metrics
    from clot_hpo.evaluate.catalogue import unregister_metric as unregister_metric
    from clot_hpo.evaluate.figures import make_figures as make_figures
    from clot_hpo.evaluate.holdout import LabelledFolder as LabelledFolder
    from clot_hpo.evaluate.holdout import evaluate_model as evaluate_model
    from clot_hpo.evaluate.holdout import load_labelled_folder as load_labelled_folder
    from clot_hpo.evaluate.holdout import predict_image_files as predict_image_files
    from clot_hpo.evaluate.metrics import THRESHOLD_METHODS as THRESHOLD_METHODS
    from clot_hpo.evaluate.metrics import binary_metrics as binary_metrics
    from clot_hpo.evaluate.metrics import choose_threshold as choose_threshold
    from clot_hpo.evaluate.metrics import confusion_counts as confusion_counts
    from clot_hpo.evaluate.metrics import expected_calibration_error as expected_calibration_error
    from clot_hpo.evaluate.metrics import sensitivity_at_specificity as sensitivity_at_specificity
    from clot_hpo.evaluate.metrics import wilson_interval as wilson_interval
    from clot_hpo.evaluate.paired import PREDICTION_COLUMNS as PREDICTION_COLUMNS
    from clot_hpo.evaluate.paired import McNemar as McNemar
    from clot_hpo.evaluate.paired import PairedAuc as PairedAuc
    from clot_hpo.evaluate.paired import align as align
    from clot_hpo.evaluate.paired import delong_test as delong_test
    from clot_hpo.evaluate.paired import mcnemar_exact as mcnemar_exact
    from clot_hpo.evaluate.paired import read_predictions as read_predictions
    from clot_hpo.evaluate.report import EvaluationReport as EvaluationReport
    from clot_hpo.evaluate.report import evaluate_trial as evaluate_trial
    from clot_hpo.evaluate.report import format_table as format_table
    from clot_hpo.evaluate.report import point_metrics as point_metrics

__getattr__, __dir__ = lazy_exports(globals())
