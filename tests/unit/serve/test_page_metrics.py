"""The page lists the champion's metrics the catalogue marks as headline, not metrics named by hand."""

from __future__ import annotations

from clot_hpo.evaluate import Metric, register_metric, unregister_metric
from clot_hpo.serve.service import page_metrics

LOGGED = {"test_auc": 0.91, "test_auc_ci_low": 0.86, "test_auc_ci_high": 0.95, "test_accuracy": 0.8}


def test_the_headline_metric_with_its_interval_and_its_level() -> None:
    # MLflow returns parameters as strings: the run's evaluation.confidence_level.
    assert page_metrics(LOGGED, {"confidence_level": "0.9"}) == [
        {"name": "auc", "label": "Test AUC", "value": 0.91, "ci_low": 0.86, "ci_high": 0.95, "ci_level": 0.9}
    ]
    assert page_metrics({}) == [
        {"name": "auc", "label": "Test AUC", "value": None, "ci_low": None, "ci_high": None, "ci_level": None}
    ]


def test_a_headline_metric_added_to_the_catalogue_reaches_the_page() -> None:
    register_metric(Metric("balanced_accuracy", "Balanced accuracy", lambda s: 0.5, headline=True))
    try:
        rows = page_metrics({**LOGGED, "test_balanced_accuracy": 0.77})
    finally:
        unregister_metric("balanced_accuracy")
    assert [r["label"] for r in rows] == ["Test AUC", "Test Balanced accuracy"]
    assert rows[1] == {
        "name": "balanced_accuracy",
        "label": "Test Balanced accuracy",
        "value": 0.77,
        "ci_low": None,
        "ci_high": None,
        "ci_level": None,
    }
