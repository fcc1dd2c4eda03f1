"""End to end: a synthetic study at prevalence 0.1, searched, reported and promoted from the CLI.

``make-synthetic --prevalence 0.1`` writes the data; the tiny CNN (32 px, 1 epoch, one trial)
trains with the class weight its search space fixes (``balanced``, over the config's
``none``); ``evaluation.prevalence: 0.05`` and ``evaluation.threshold: sensitivity@0.9``.
PPV and NPV, with intervals, must reach the trial's MLflow metrics, ``report.md`` (with the
prevalence they are taken at, and the note that the test split has too few positives) and
the model card ``promote`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.support.cli import run_cli, run_main

pytestmark = pytest.mark.slow

SPACE = """\
backbone: tiny_cnn
parameters:
  image_size: {type: fixed, value: 32}
  batch_size: {type: fixed, value: 16}
  learning_rate: {type: fixed, value: 3.0e-3}
  class_weight: {type: fixed, value: balanced}
"""
CONFIG = """\
name: rare
seed: 2
data: {path: data, val_fraction: 0.3, test_fraction: 0.35}
training: {epochs: 1, weights: none, class_weight: none}
search: {backbones: [tiny_cnn], pruner: none, n_trials: 1, search_spaces: {tiny_cnn: tiny.yaml}}
budget: {vram_gb: 4}
evaluation: {bootstrap_samples: 100, explanations: false, prevalence: 0.05, threshold: sensitivity@0.9}
"""
URI = "sqlite:///mlruns/mlflow.db"


def test_an_imbalanced_study_reports_predictive_values_in_mlflow_the_report_and_the_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = run_cli(
        "make-synthetic",
        "data",
        "--n-per-class",
        "80",
        "--image-size",
        "32",
        "--prevalence",
        "0.1",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    assert "16 positive + 144 negative images (prevalence 0.1)" in made.stdout
    (tmp_path / "tiny.yaml").write_text(SPACE)
    (tmp_path / "exp.yaml").write_text(CONFIG)
    search = run_cli("search", "exp.yaml", cwd=tmp_path)
    assert search.returncode == 0, search.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rare")
    [trial] = client.search_runs([experiment.experiment_id], "tags.`clot_hpo.role` = 'trial'")
    assert trial.data.params["class_weight_run"] == "balanced", "the space's value wins over the config's"
    metrics = trial.data.metrics
    for name in ("test_ppv", "test_npv", "val_ppv", "val_npv"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    assert metrics["val_sensitivity"] >= 0.9, "sensitivity@0.9 on validation"

    # `report` and `promote` through main() in this process, which has MLflow imported already:
    # two fresh interpreters fewer; `search` stays a real process (it starts the trial's).
    report = run_main(
        capsys, "report", "--experiment", "rare", "--tracking-uri", URI, "--out", "out", cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr[-3000:]
    text = (tmp_path / "out" / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Backbone | Trial | Threshold"))
    assert "| Specificity | PPV | NPV |" in header
    row = next(line for line in text.splitlines() if line.startswith("| tiny_cnn |"))
    ppv = f"{metrics['test_ppv']:.3f} ({metrics['test_ppv_ci_low']:.3f}–{metrics['test_ppv_ci_high']:.3f})"
    assert ppv in row
    assert "at a prevalence of 0.05 (evaluation.prevalence)" in text and "sensitivity ≥ 0.9" in text
    assert "Too few positives in the test split for tiny_cnn" in text

    promoted = run_main(capsys, "promote", "--config", "exp.yaml", cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    registry = MlflowClient(client.tracking_uri, registry_uri=client.tracking_uri)
    version = registry.get_model_version_by_alias("blood-clot-detector", "champion")
    card_path = registry.download_artifacts(version.run_id, "model_card.json", str(tmp_path))
    card = json.loads(Path(card_path).read_text())
    assert card["metrics"]["prevalence"] == 0.05
    for name in ("ppv", "npv"):
        row_facts = card["metrics"]["test"][name]
        assert row_facts["value"] == pytest.approx(metrics[f"test_{name}"])
        assert row_facts["ci_low"] <= row_facts["value"] <= row_facts["ci_high"]
    markdown = Path(registry.download_artifacts(version.run_id, "model_card.md", str(tmp_path))).read_text()
    assert "| PPV |" in markdown and "| NPV |" in markdown and "at a prevalence of 0.05" in markdown
