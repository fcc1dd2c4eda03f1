"""Issue 23 item 4: a ``search.cv_folds: 5`` study on a real ``mlflow server``, promoted.

Two configurations of the tiny CNN (32 px, 120 synthetic images of 60 patients, 4 epochs per
fold), queued in this order: one that learns (learning rate 3e-3) and one that cannot
(1e-9). The first trains its 5 folds and the refit; the second is stopped by the Hyperband
pruner after its first fold, its running mean below the first trial's at the same step.
``promote`` then registers the first trial's refit model, as docs/data.md describes.
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient

from clot_hpo.data.synthetic import make_synthetic
from tests.support.cli import run_cli
from tests.support.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

STUDY = "cv-study"
MODEL = "cv-clot-detector"
FOLDS, EPOCHS = 5, 4
SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: fixed, value: 32}
  batch_size: {type: fixed, value: 8}
  optimizer: {type: fixed, value: adam}
  learning_rate: {type: categorical, choices: [3.0e-3, 1.0e-9]}
  dropout: {type: fixed, value: 0.0}
  pooling: {type: fixed, value: max}
  use_dense: {type: fixed, value: false}
  aug_flip: {type: fixed, value: true}
"""


@pytest.fixture(scope="module")
def study(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    """The cross-validated study, searched and promoted."""
    work = tmp_path_factory.mktemp("cv-study")
    data = make_synthetic(work / "data", n_per_class=60, image_size=32, seed=1, progress=False)
    (work / "space.yaml").write_text(SPACE)
    (work / "exp.yaml").write_text(
        f"name: {STUDY}\nseed: 7\ndata: {{val_fraction: 0.2, test_fraction: 0.2}}\n"
        f"training: {{epochs: {EPOCHS}, weights: none}}\n"
        "search: {backbones: [tiny_cnn], search_spaces: {tiny_cnn: space.yaml}, pruner: hyperband, "
        f"cv_folds: {FOLDS}, defaults_first: false}}\n"
        f"tracking: {{model_name: {MODEL}}}\n"
        "budget: {vram_gb: 4}\nevaluation: {bootstrap_samples: 200, explanations: false}\n"
    )
    storage = f"sqlite:///{work}/optuna.db"
    queued = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    queued.enqueue_trial({"learning_rate": 3e-3})
    queued.enqueue_trial({"learning_rate": 1e-9})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        result = run_cli(*args, cwd=work)
        assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
        return result

    common = ("--storage", storage, "--tracking-uri", mlflow_server.uri)
    cli("search", "exp.yaml", "--data", str(data), *common, "--n-trials", "2")
    cli("promote", "--config", "exp.yaml", "--experiment", STUDY, *common)
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(STUDY)
    runs = {
        int(r.data.tags["optuna.trial_number"]): r
        for r in client.search_runs([experiment.experiment_id], max_results=50)
        if "optuna.trial_number" in r.data.tags
    }
    return {
        "trials": optuna.load_study(study_name=STUDY, storage=storage).trials,
        "runs": runs,
        "client": client,
        "work": work,
    }


def test_each_fold_is_on_the_trials_run_and_the_objective_is_their_mean(study: dict[str, Any]) -> None:
    good = study["trials"][0]
    assert good.state == optuna.trial.TrialState.COMPLETE
    # The running mean after each fold, at the fold's last epoch counted over the trial.
    steps = [fold * EPOCHS - 1 for fold in range(1, FOLDS + 1)]
    assert sorted(good.intermediate_values) == steps
    folds = good.user_attrs["cv_fold_values"]
    assert len(folds) == FOLDS
    assert good.value == pytest.approx(sum(folds) / FOLDS)
    assert good.intermediate_values[steps[0]] == pytest.approx(folds[0])
    # The epoch budget counts every fold and the refit.
    assert good.user_attrs["epochs_run"] == EPOCHS * (FOLDS + 1)

    run = study["runs"][0]
    metrics = run.data.metrics
    for i, value in enumerate(folds, start=1):
        assert metrics[f"fold{i}_val_auc"] == pytest.approx(value)
    assert metrics["val_auc"] == pytest.approx(good.value)
    assert metrics["val_auc_std"] > 0
    assert "val_auc_oof" in metrics and run.data.params["cv_folds"] == str(FOLDS)
    history = study["client"].get_metric_history(run.info.run_id, "fold3/val_loss")
    assert sorted(m.step for m in history) == list(range(2 * EPOCHS, 3 * EPOCHS))


def test_the_folds_split_the_non_test_data_by_patient(study: dict[str, Any]) -> None:
    import pandas as pd

    folder = study["work"] / "mlruns" / "studies" / STUDY
    trial_manifest = pd.read_csv(folder / "trial_manifest.csv")
    groups = pd.read_csv(folder / "data" / "split_manifest.csv").set_index("sha256")["group"]
    trial_manifest["group"] = trial_manifest["sha256"].map(groups)
    assert trial_manifest["group"].notna().all()
    assert (trial_manifest["fold"][trial_manifest["split"] == "test"] == 0).all()
    pool = trial_manifest[trial_manifest["split"] != "test"]
    assert sorted(pool["fold"].unique()) == list(range(1, FOLDS + 1))
    assert (pool.groupby("group")["fold"].nunique() == 1).all()  # a patient in one fold only
    assert (pool.groupby("fold")["label"].nunique() == 2).all()  # each fold has both classes


def test_the_pruner_stops_the_weak_configuration_after_its_first_fold(study: dict[str, Any]) -> None:
    weak = study["trials"][1]
    assert weak.params["learning_rate"] == 1e-9
    assert weak.state == optuna.trial.TrialState.PRUNED
    assert list(weak.intermediate_values) == [EPOCHS - 1]
    assert weak.user_attrs["epochs_run"] == EPOCHS
    metrics = study["runs"][1].data.metrics
    assert "fold1_val_auc" in metrics and "fold2_val_auc" not in metrics


def test_promote_registers_the_refit_scored_on_the_untouched_test_split(study: dict[str, Any]) -> None:
    client, run = study["client"], study["runs"][0]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == run.info.run_id
    # The refit: one more training of the configuration, on all non-test data, after the folds.
    refit = client.get_metric_history(run.info.run_id, "refit/loss")
    assert sorted(m.step for m in refit) == list(range(FOLDS * EPOCHS, (FOLDS + 1) * EPOCHS))
    assert run.data.metrics["test_auc"] >= 0.9
    files = {}
    for name in ("val_predictions.csv", "test_predictions.csv"):
        local = client.download_artifacts(run.info.run_id, name, str(study["work"]))
        files[name] = list(csv.DictReader(io.StringIO(Path(local).read_text())))
    # Validation is every non-test image, each scored by the fold model that did not train on it.
    assert len(files["val_predictions.csv"]) == 96 and len(files["test_predictions.csv"]) == 24
    keys = {r["key"] for r in files["val_predictions.csv"]}
    assert not keys & {r["key"] for r in files["test_predictions.csv"]}
