"""An imbalanced study (prevalence 0.1): PPV and NPV at ``evaluation.prevalence``, with intervals,
in the trial's metrics, the report and the model card; and the report's note on too few positives.

The study is fabricated (real MLflow runs on SQLite, a real Optuna storage, a tiny model).
Expected values are computed here from the confusion counts by Bayes' rule, and the
intervals from statsmodels' Wilson bounds, independently of the catalogue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from statsmodels.stats.proportion import proportion_confint

from clot_hpo.config.schema import EvaluationConfig
from clot_hpo.evaluate import evaluate_trial
from clot_hpo.registry import promote
from clot_hpo.registry.gate import GateRule
from clot_hpo.render.document import Paragraph, Table
from clot_hpo.report.build import build_report
from clot_hpo.search.ledger import TrialLedger
from clot_hpo.tracking.study_reader import read_study
from tests.support.promotion import fabricate_study, predictions

DEPLOYED = 0.03  # the prevalence where the model will be used: rarer than in the test split


def _bayes(sens: float, spec: float, prev: float) -> tuple[float, float]:
    ppv = sens * prev / (sens * prev + (1 - spec) * (1 - prev))
    npv = spec * (1 - prev) / (spec * (1 - prev) + (1 - sens) * prev)
    return ppv, npv


def _expected(frame: Any, threshold: float) -> dict[str, tuple[float, float, float]]:
    y, called = frame["label"].to_numpy(), (frame["probability"] >= threshold).to_numpy()
    tp, fn = int((called & (y == 1)).sum()), int((~called & (y == 1)).sum())
    tn, fp = int((~called & (y == 0)).sum()), int((called & (y == 0)).sum())
    sens_ci = proportion_confint(tp, tp + fn, method="wilson")
    spec_ci = proportion_confint(tn, tn + fp, method="wilson")
    point = _bayes(tp / (tp + fn), tn / (tn + fp), DEPLOYED)
    low = _bayes(sens_ci[0], spec_ci[0], DEPLOYED)
    high = _bayes(sens_ci[1], spec_ci[1], DEPLOYED)
    return {"ppv": (point[0], low[0], high[0]), "npv": (point[1], low[1], high[1])}


def test_an_imbalanced_study_reports_ppv_and_npv_at_the_deployment_prevalence(tmp_path: Path) -> None:
    val = predictions(200, separation=1.5, seed=3, noise_seed=4, prevalence=0.1)
    test = predictions(200, separation=1.5, seed=5, noise_seed=6, prevalence=0.1)
    assert int(test["label"].sum()) == 20, "prevalence 0.1"
    ev = EvaluationConfig(bootstrap_samples=200, prevalence=DEPLOYED, threshold="sensitivity@0.9")
    evaluation = evaluate_trial(
        val["label"], val["probability"], test["label"], test["probability"], ev, seed=7, figures=False
    )
    threshold = evaluation.threshold
    expected = _expected(test, threshold)
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    trial = {"metrics": dict(evaluation.metrics), "predictions": test, "val_predictions": val}
    config = {"prevalence": DEPLOYED, "threshold": "sensitivity@0.9", "bootstrap_samples": 200}
    runs = fabricate_study(uri, storage, tmp_path, "rare", [trial], evaluation=config)

    # The trial's metrics: PPV and NPV at 0.03, not at the test split's 0.1, with intervals.
    logged = MlflowClient(uri).get_run(runs[0]).data.metrics
    for name, (point, low, high) in expected.items():
        got = (logged[f"test_{name}"], logged[f"test_{name}_ci_low"], logged[f"test_{name}_ci_high"])
        assert got == pytest.approx((point, low, high)), name
    at_split = _bayes(logged["test_sensitivity"], logged["test_specificity"], 0.1)[0]
    assert logged["test_ppv"] < at_split, "a rarer disease gives a lower PPV"
    # On validation the rule reached its sensitivity, chosen there.
    assert logged["val_sensitivity"] >= 0.9

    # The report: PPV and NPV columns with intervals, recomputed from the files, and the
    # prevalence they are taken at; the test split's 20 positives are too few for 0.2.
    built = build_report(read_study(uri, "rare", folder=tmp_path / "study"))
    table = next(b for b in built.document.blocks if isinstance(b, Table) and b.ident == "results-table")
    [row] = table.rows
    for label, name in (("PPV", "ppv"), ("NPV", "npv")):
        point, low, high = expected[name]
        assert row[table.columns.index(label)] == f"{point:.3f} ({low:.3f}–{high:.3f})"
    assert "at a prevalence of 0.03 (evaluation.prevalence)" in table.caption
    assert "sensitivity ≥ 0.9" in table.caption
    notes = [
        b.text for b in built.document.blocks if isinstance(b, Paragraph) and "Too few positives" in b.text
    ]
    assert len(notes) == 1 and "20 clot image(s)" in notes[0] and "wider than 0.2" in notes[0]

    # The card: PPV and NPV rows with their intervals, and the prevalence.
    result = promote(uri, "rare", ledger=TrialLedger(storage), model_name="rare", rule=GateRule())
    client = MlflowClient(uri, registry_uri=uri)
    card = json.loads(
        Path(client.download_artifacts(result.run_id, "model_card.json", str(tmp_path))).read_text()
    )
    assert card["metrics"]["prevalence"] == DEPLOYED
    for name, (point, low, high) in expected.items():
        facts = card["metrics"]["test"][name]
        assert (facts["value"], facts["ci_low"], facts["ci_high"]) == pytest.approx((point, low, high))
    markdown = Path(client.download_artifacts(result.run_id, "model_card.md", str(tmp_path))).read_text()
    point, low, high = expected["ppv"]
    assert f"| PPV | {point:.3f} | {low:.3f}–{high:.3f} |" in markdown
    assert "at a prevalence of 0.03" in markdown
