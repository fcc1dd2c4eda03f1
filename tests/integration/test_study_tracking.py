"""A real study logged to a real ``mlflow server``, read back, promoted and used.

One `clot-hpo search` on tiny synthetic data with a complete, a budget-pruned and a crashed
trial; everything is then checked through ``MlflowClient`` and the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from tests.support.cli import REPO, run_cli
from tests.support.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

MODEL = "tracked-study-detector"
PROPORTIONS = ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1")
SPACE = """backbone: tiny_cnn
parameters:
  image_size: {type: categorical, choices: [32, 1536]}
  batch_size: {type: categorical, choices: [16]}
  learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


@pytest.fixture(scope="module")
def tracked_study(
    mlflow_server: MlflowServer,  # noqa: F811
    tiny_dataset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, object]:
    work = tmp_path_factory.mktemp("tracked")
    (work / "space.yaml").write_text(SPACE)
    (work / "exp.yaml").write_text(
        "name: tracked\ntraining: {epochs: 2, weights: none}\n"
        "search: {backbones: [tiny_cnn], search_spaces: {tiny_cnn: space.yaml}, pruner: none}\n"
        "budget: {vram_gb: 1}\nevaluation: {bootstrap_samples: 200}\n"
    )
    storage = f"sqlite:///{work}/optuna.db"
    study = optuna.create_study(study_name="tracked", storage=storage, direction="maximize")
    study.enqueue_trial({"image_size": 32})  # completes
    study.enqueue_trial({"image_size": 32})  # its process crashes (injected)
    # Pruned by the VRAM budget before training (and before it decodes its images): no batch of
    # 1536 px fits 1 GiB.
    study.enqueue_trial({"image_size": 1536})
    study.enqueue_trial({"image_size": 32})  # completes
    result = run_cli(
        "search",
        "exp.yaml",
        "--data",
        str(tiny_dataset),
        "--storage",
        storage,
        "--tracking-uri",
        mlflow_server.uri,
        "--n-trials",
        "3",
        cwd=work,
        env={"CLOT_HPO_FAULT_INJECT": "segv:1"},
    )
    assert result.returncode == 0, result.stderr
    return {"work": work, "uri": mlflow_server.uri, "storage": storage}


def _runs(uri: str) -> tuple[MlflowClient, object, list[object]]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return client, experiment, runs


def test_one_child_run_per_trial_with_matching_status(tracked_study: dict[str, object]) -> None:
    _, _, runs = _runs(str(tracked_study["uri"]))
    study = optuna.load_study(study_name="tracked", storage=str(tracked_study["storage"]))
    parents = [r for r in runs if r.data.tags.get("clot_hpo.role") == "study"]
    children = [r for r in runs if r.data.tags.get("clot_hpo.role") == "trial"]
    assert len(parents) == 1
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [
        t.number for t in study.trials
    ]
    # A pruned trial's run ends FINISHED (the UI draws KILLED as a failure) and says it was pruned.
    expected = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
    for run in children:
        trial = study.trials[int(run.data.tags["optuna.trial_number"])]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        pruned = " (pruned before training)" if trial.state.name == "PRUNED" else ""  # the VRAM budget's
        assert run.info.run_name == f"trial-{trial.number}{pruned}"
        assert run.data.tags["optuna.trial_state"] == trial.state.name
        assert run.info.status == expected[trial.state.name]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"]
    # The study run records what it optimizes, and its best trial as headline metrics.
    parent = parents[0]
    assert (
        parent.data.tags["clot_hpo.objective"] == "val_auc"
        and parent.data.tags["optuna.direction"] == "maximize"
    )
    headline = parent.data.metrics
    assert headline["best_trial"] == study.best_trial.number
    assert headline["best_val_auc"] == pytest.approx(study.best_value)
    best_run = next(r for r in children if int(r.data.tags["optuna.trial_number"]) == study.best_trial.number)
    assert headline["best_test_auc"] == pytest.approx(best_run.data.metrics["test_auc"])
    assert (headline["n_trials_complete"], headline["n_trials_pruned"], headline["n_trials_failed"]) == (
        2,
        1,
        1,
    )
    failed = next(r for r in children if r.info.status == "FAILED")
    assert "SIGSEGV" in failed.data.tags["fail_reason"]


def test_completed_trials_carry_consistent_metrics_and_artifacts(
    tracked_study: dict[str, object], tmp_path: Path
) -> None:
    client, _, runs = _runs(str(tracked_study["uri"]))
    complete = [r for r in runs if r.data.tags.get("optuna.trial_state") == "COMPLETE"]
    assert len(complete) == 2
    for run in complete:
        m = run.data.metrics
        local = client.download_artifacts(run.info.run_id, "confusion_matrix.json", str(tmp_path))
        cm = json.loads(Path(local).read_text())
        tn, fp, fn, tp = (cm[k] for k in ("tn", "fp", "fn", "tp"))
        assert m["test_sensitivity"] == pytest.approx(tp / (tp + fn))
        assert m["test_specificity"] == pytest.approx(tn / (tn + fp))
        assert m["test_accuracy"] == pytest.approx((tp + tn) / (tn + fp + fn + tp))
        assert cm["threshold"] == pytest.approx(m["threshold"])
        for name in PROPORTIONS + ("auc",):
            for split in ("val", "test"):
                key = f"{split}_{name}"
                assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
        for key in ("loss", "val_loss", "val_auc", "test_auc", "test_pr_auc", "test_brier", "test_ece"):
            assert key in m, key
        history = client.get_metric_history(run.info.run_id, "loss")
        assert len(history) == 2, "one value per epoch"
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {
            "confusion_matrix.json",
            "confusion_matrix.png",
            "roc_curve.png",
            "pr_curve.png",
            "reliability_diagram.png",
            "training_curves.png",
            "explanations",  # the failure gallery: the loopback server keeps artifacts local
        } <= files, files
        assert run.data.params["learning_rate"]
    parent = next(r for r in runs if r.data.tags.get("clot_hpo.role") == "study")
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "trials.csv", "optimization_history.png"} <= parent_files, parent_files
    assert parent.inputs.dataset_inputs, "the dataset digest is logged as an MLflow dataset input"


def test_promote_predict_and_pyfunc_use_the_champion(
    tracked_study: dict[str, object], tiny_dataset: Path
) -> None:
    uri = str(tracked_study["uri"])
    # Its own model name: the server is shared with other tests that promote the default one.
    storage = str(tracked_study["storage"])  # the Optuna storage vouches for the trials
    args = (
        "promote",
        "--tracking-uri",
        uri,
        "--storage",
        storage,
        "--experiment",
        "tracked",
        "--model-name",
        MODEL,
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    again = run_cli(*args)
    assert again.returncode == 0 and "no new version" in again.stdout
    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1
    images = [
        *sorted((tiny_dataset / "positive").glob("*.png"))[:2],
        *sorted((tiny_dataset / "negative").glob("*.png"))[:1],
    ]
    predicted = run_cli(
        "predict", "--tracking-uri", uri, "--model", f"models:/{MODEL}@champion", *map(str, images)
    )
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in predicted.stdout.splitlines() if line.startswith("{")]
    assert sorted(line["image"] for line in lines) == sorted(str(p) for p in images)
    threshold = float(champion.tags["threshold"])
    for line in lines:
        assert 0.0 <= line["probability"] <= 1.0
        assert line["label"] == int(line["probability"] >= threshold)
    # A plain Python process, no clot_hpo import: the registered model is self-contained.
    code = (
        "import mlflow, numpy as np; mlflow.set_tracking_uri(%r);"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion');"
        "print(np.asarray(m.predict(np.full((3, 32, 32, 3), 128, dtype='float32'))).reshape(-1).size)" % uri
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(REPO.parent),
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "3"
    assert np.isfinite(threshold)
