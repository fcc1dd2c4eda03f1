"""A metric added to the catalogue in one place reaches the trial's MLflow metrics, the report and the card.

The metric (balanced accuracy, bootstrapped) is registered by a fixture and nowhere else;
the study is fabricated (real MLflow runs on SQLite, a real Optuna storage, a tiny model),
its trial's metrics are what :func:`~clot_hpo.evaluate.evaluate_trial` returns, as a
trial logs them. The expected values are computed here another way (scikit-learn).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import balanced_accuracy_score

from clot_hpo.config.schema import EvaluationConfig
from clot_hpo.evaluate import Metric, Scored, evaluate_trial, register_metric, unregister_metric
from clot_hpo.registry import promote
from clot_hpo.registry.gate import GateRule
from clot_hpo.render.document import Table, to_markdown
from clot_hpo.report.build import build_report
from clot_hpo.search.ledger import TrialLedger
from clot_hpo.tracking.study_reader import read_study
from tests.support.promotion import fabricate_study, predictions

NAME, LABEL = "balanced_accuracy", "Balanced accuracy"


def _balanced_accuracy(s: Scored) -> float:
    tn, fp, fn, tp = s.counts
    return 0.5 * (tp / max(tp + fn, 1) + tn / max(tn + fp, 1))


@pytest.fixture
def added_metric() -> Iterator[Metric]:
    metric = register_metric(Metric(NAME, LABEL, _balanced_accuracy, interval="bootstrap"))
    try:
        yield metric
    finally:
        unregister_metric(NAME)


def test_a_metric_added_in_one_place_reaches_mlflow_the_report_and_the_card(
    added_metric: Metric, tmp_path: Path
) -> None:
    val, test = predictions(80, separation=1.2, seed=3, noise_seed=4), predictions(separation=1.2)
    ev = EvaluationConfig(bootstrap_samples=200)
    report = evaluate_trial(
        val["label"], val["probability"], test["label"], test["probability"], ev, seed=7 + 0, figures=False
    )
    threshold = report.threshold
    expected = balanced_accuracy_score(test["label"], (test["probability"] >= threshold).astype(int))
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    trial = {
        "metrics": {"val_auc": report.metrics["val_auc"], **report.metrics},
        "predictions": test,
        "val_predictions": val,
    }
    runs = fabricate_study(uri, storage, tmp_path, "added", [trial])

    # The trial's MLflow metrics: the value and its interval on both splits.
    logged = MlflowClient(uri).get_run(runs[0]).data.metrics
    for split in ("val", "test"):
        assert {f"{split}_{NAME}", f"{split}_{NAME}_ci_low", f"{split}_{NAME}_ci_high"} <= set(logged)
    assert logged[f"test_{NAME}"] == pytest.approx(expected)
    low, high = logged[f"test_{NAME}_ci_low"], logged[f"test_{NAME}_ci_high"]
    assert low <= expected <= high and high - low > 0.01

    # The report: a column of the results table, recomputed from the predictions files.
    built = build_report(read_study(uri, "added", folder=tmp_path / "study"))
    table = next(b for b in built.document.blocks if isinstance(b, Table) and b.ident == "results-table")
    column = table.columns.index(LABEL)
    [row] = table.rows
    assert row[column].startswith(f"{expected:.3f} (") and "–" in row[column]
    assert LABEL in to_markdown(built.document)

    # The card: a row with its interval, in the facts and in the text.
    result = promote(uri, "added", ledger=TrialLedger(storage), model_name="added", rule=GateRule())
    client = MlflowClient(uri, registry_uri=uri)
    card = json.loads(
        Path(client.download_artifacts(result.run_id, "model_card.json", str(tmp_path))).read_text()
    )
    row_facts: dict[str, Any] = card["metrics"]["test"][NAME]
    assert row_facts["value"] == pytest.approx(expected)
    assert (row_facts["ci_low"], row_facts["ci_high"]) == pytest.approx((low, high))
    markdown = Path(client.download_artifacts(result.run_id, "model_card.md", str(tmp_path))).read_text()
    assert f"| {LABEL} | {expected:.3f} | {low:.3f}–{high:.3f} |" in markdown


def test_without_the_entry_nothing_shows_it(tmp_path: Path) -> None:
    """The same evaluation without the fixture: the metric is nowhere (the test above can fail)."""
    val, test = predictions(80, separation=1.2, seed=3, noise_seed=4), predictions(separation=1.2)
    report = evaluate_trial(
        val["label"],
        val["probability"],
        test["label"],
        test["probability"],
        EvaluationConfig(bootstrap_samples=100),
        figures=False,
    )
    assert not any(NAME in key for key in report.metrics)
    assert LABEL not in report.table()
    assert np.isfinite(report.metrics["test_auc"])
