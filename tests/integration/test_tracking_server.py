"""The tracker, promotion and the champion against a real ``mlflow server`` process.

A short "study" is logged the way the search logs it (the trial process spools, the study
process forwards; a tiny Keras model and the real evaluation), then everything is read back through
``MlflowClient`` and used through the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from clot_hpo.config import EvaluationConfig
from clot_hpo.evaluate import evaluate_trial
from clot_hpo.registry import promote
from clot_hpo.search.ledger import TrialLedger
from clot_hpo.tracking.mlflow_tracker import MlflowTracker
from clot_hpo.tracking.spool import SpoolReader, SpoolTracker
from tests.support.cli import run_main
from tests.support.mlflow_server import (  # noqa: F401  (pytest fixture)
    MlflowServer,
    mlflow_server,
    tiny_keras_model,
    write_images,
)
from tests.support.promotion import record_ledger

pytestmark = pytest.mark.slow

STUDY = "server-study"
STATES = {0: "COMPLETE", 1: "PRUNED", 2: "FAIL", 3: "COMPLETE"}
INTERVALS = ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "auc", "pr_auc")


@pytest.fixture(scope="module")
def study(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    from clot_hpo.data import load_image_batch

    root = tmp_path_factory.mktemp("server-study")
    images = write_images(root / "images", 24, image_size=32, seed=4)
    labels = np.array([i % 2 for i in range(24)])
    manifest = root / "manifest.csv"
    pd.DataFrame(
        {
            "path": [str(p) for p in images],
            "label": labels,
            "split": ["train"] * 8 + ["val"] * 8 + ["test"] * 8,
        }
    ).to_csv(manifest, index=False)
    pixels = load_image_batch(images, 32)

    tracker = MlflowTracker(mlflow_server.uri, experiment_name=STUDY, tries=3, backoff_s=0.2)
    tracker.check_available()
    parent = tracker.start_study(
        STUDY, tags={"optuna.storage": "sqlite:///optuna.db"}, objective="val_auc", direction="maximize"
    )
    tracker.log_study_inputs(
        config={"name": STUDY, "data": {"path": str(root / "images")}},
        search_spaces={"tiny_cnn": {"filters": {"type": "int", "low": 4, "high": 8}}},
        manifest_path=manifest,
        dataset_digest="d" * 64,
    )
    runs, reports = {}, {}
    model_files: dict[int, Path] = {}
    model_ids: dict[int, str] = {}
    for number, state in STATES.items():
        run_id = tracker.start_trial(number)
        # The trial process spools to files; the study process forwards them to the server.
        child = SpoolTracker(root / f"spool-{number}")
        reader = SpoolReader(child.folder)
        child.log_params("", {"filters": 4, "learning_rate": 1e-3})
        epochs = 1 if state == "PRUNED" else 3
        for epoch in range(epochs):
            child.log_epoch(
                "",
                epoch,
                {
                    "loss": 0.7 - 0.05 * epoch,
                    "auc": 0.5 + 0.05 * epoch,
                    "val_loss": 0.72 - 0.04 * epoch,
                    "val_auc": 0.5 + 0.04 * epoch,
                },
            )
            reader.forward(tracker, run_id)  # live, epoch by epoch, as the search does
        if state == "COMPLETE":
            model = tiny_keras_model(32, seed=number)
            probs = model.predict(pixels, verbose=0).reshape(-1)
            report = evaluate_trial(
                labels[8:16],
                probs[8:16],
                labels[16:],
                probs[16:],
                EvaluationConfig(bootstrap_samples=200),
                seed=number,
                history={"loss": [0.7, 0.65, 0.6], "val_loss": [0.72, 0.68, 0.64]},
            )
            child.log_evaluation(
                "", metrics=report.metrics, artifacts=report.artifacts, figures=report.figures
            )
            child.log_model("", model, image_size=32, threshold=report.threshold)
            reports[number] = report
            # The trial process records its model file's sha256 before the file is forwarded.
            kept = root / f"model-{number}.keras"
            shutil.copyfile(child.folder / "model.keras", kept)
            model_files[number] = kept
        reader.forward(
            tracker, run_id, on_model=lambda model_id, n=number: model_ids.__setitem__(n, model_id)
        )
        tracker.end_trial(
            run_id, state, reason={"PRUNED": "pruned at epoch 1", "FAIL": "injected OOM"}.get(state)
        )
        runs[number] = run_id
    # The trials as the search records them in its Optuna storage: `promote` takes only those.
    import optuna

    storage = f"sqlite:///{root / 'optuna.db'}"
    optuna_study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for number, state in STATES.items():
        trial = optuna_study.ask()
        record_ledger(
            optuna_study,
            trial,
            run_id=runs[number],
            parent=parent,
            digest="d" * 64,
            metrics={k: v for k, v in reports[number].metrics.items() if k.startswith(("val_", "test_"))}
            if number in reports
            else {},
            model_id=model_ids.get(number),
            model_file=model_files.get(number),
        )
        if state == "COMPLETE":
            optuna_study.tell(trial, reports[number].metrics["val_auc"])
        else:
            optuna_study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    trials_csv = root / "trials.csv"
    trials_csv.write_text("number,state\n" + "\n".join(f"{n},{s}" for n, s in STATES.items()) + "\n")
    tracker.log_study_summary(trials_csv, {})
    tracker.end_study()
    return {
        "uri": mlflow_server.uri,
        "root": root,
        "storage": storage,
        "parent": parent,
        "runs": runs,
        "reports": reports,
        "images": images,
        "pixels": pixels,
        "client": MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri),
    }


def test_one_child_run_per_trial_with_matching_statuses(study: dict[str, Any]) -> None:
    client = study["client"]
    exp = client.get_experiment_by_name(STUDY)
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{study['parent']}'")
    # A pruned trial's run reads as pruned, with its stop epoch: FINISHED, since the UI draws
    # KILLED as a failure; the Optuna state stays in its tag.
    names = {
        n: f"trial-{n} (pruned at epoch 1)" if s == "PRUNED" else f"trial-{n}" for n, s in STATES.items()
    }
    assert sorted(r.info.run_name for r in children) == sorted(names.values())
    mlflow_status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
    for run in children:
        number = int(run.data.tags["optuna.trial_number"])
        assert run.data.tags["optuna.trial_state"] == STATES[number]
        assert run.info.status == mlflow_status[STATES[number]]
        assert run.data.tags["optuna.study"] == STUDY
    assert client.get_run(study["runs"][2]).data.tags["fail_reason"] == "injected OOM"
    parent = client.get_run(study["parent"])
    assert parent.info.status == "FINISHED"
    # The study run's headline: its trial counts (the best trial's metrics are checked with promote).
    counts = {state: sum(s == state for s in STATES.values()) for state in ("COMPLETE", "PRUNED", "FAIL")}
    assert (
        parent.data.metrics["n_trials_complete"],
        parent.data.metrics["n_trials_pruned"],
        parent.data.metrics["n_trials_failed"],
    ) == (counts["COMPLETE"], counts["PRUNED"], counts["FAIL"])
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_spool_drops_what_the_server_stored(study: dict[str, Any]) -> None:
    spool = study["root"] / "spool-0"
    assert (spool / "events.jsonl").is_file()
    assert not (spool / "model.keras").exists(), "the model file goes once the server stored it"
    assert not list(spool.glob("*.png")) and not list(spool.glob("*.pkl")), "figures: PNG, forwarded once"


def test_epoch_metrics_and_params(study: dict[str, Any]) -> None:
    client = study["client"]
    run_id = study["runs"][0]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2]
    assert client.get_run(run_id).data.params == {"filters": "4", "learning_rate": "0.001"}
    assert [m.step for m in client.get_metric_history(study["runs"][1], "val_auc")] == [0]


def test_test_metrics_match_the_confusion_matrix_and_intervals_hold(
    study: dict[str, Any], tmp_path: Path
) -> None:
    client = study["client"]
    for number, report in study["reports"].items():
        run = client.get_run(study["runs"][number])
        m = run.data.metrics
        cm = json.loads(
            Path(
                client.download_artifacts(run.info.run_id, "confusion_matrix.json", str(tmp_path))
            ).read_text()
        )
        tn, fp, fn, tp = cm["tn"], cm["fp"], cm["fn"], cm["tp"]
        assert cm["threshold"] == pytest.approx(m["threshold"])
        assert m["test_accuracy"] == pytest.approx((tp + tn) / (tn + fp + fn + tp))
        assert m["test_sensitivity"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
        assert m["test_recall"] == pytest.approx(m["test_sensitivity"])
        assert m["test_specificity"] == pytest.approx(tn / (tn + fp) if tn + fp else 0.0)
        assert m["test_precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        for split in ("val", "test"):
            for name in INTERVALS:
                key = f"{split}_{name}"
                assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
        assert m["val_auc"] == pytest.approx(report.metrics["val_auc"])  # evaluation, not the last epoch


def test_artifacts_are_present(study: dict[str, Any]) -> None:
    client = study["client"]
    trial = {a.path for a in client.list_artifacts(study["runs"][0])}
    assert {
        "confusion_matrix.json",
        "val_confusion_matrix.json",
        "confusion_matrix.png",
        "roc_curve.png",
        "pr_curve.png",
        "reliability_diagram.png",
        "training_curves.png",
        "model.weights.h5",
    } <= trial
    assert not {a.path for a in client.list_artifacts(study["runs"][1])}  # pruned: nothing evaluated
    parent = {a.path for a in client.list_artifacts(study["parent"])}
    assert {"config.yaml", "search_spaces", "data", "trials.csv"} <= parent
    [dataset] = client.get_run(study["parent"]).inputs.dataset_inputs
    assert dataset.dataset.digest == "d" * 36 and dataset.dataset.name == "images"
    run = client.get_run(study["runs"][0])
    assert run.data.tags["clot_hpo.dataset_digest"] == "d" * 64
    assert client.get_logged_model(run.data.tags["clot_hpo.model_id"]).status.name == "READY"


def test_promote_predict_and_pyfunc_through_the_server(
    study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, client = study["uri"], study["client"]
    best = max(study["reports"], key=lambda n: study["reports"][n].metrics["val_auc"])
    # `promote` and `predict` through main() in this process, which has MLflow and TensorFlow
    # imported already (two fresh interpreters fewer); the pyfunc check below is a fresh one.
    proc = run_main(
        capsys, "promote", "--tracking-uri", uri, "--storage", study["storage"], "--experiment", STUDY
    )
    assert proc.returncode == 0, proc.stderr
    champion = client.get_model_version_by_alias("blood-clot-detector", "champion")
    assert champion.run_id == study["runs"][best]
    headline = client.get_run(study["parent"]).data.metrics
    assert headline["best_trial"] == best
    assert headline["best_val_auc"] == pytest.approx(study["reports"][best].metrics["val_auc"])
    again = promote(uri, STUDY, ledger=TrialLedger(study["storage"]))
    assert not again.registered and not again.alias_moved and "nothing to move" in again.message
    assert len(client.search_model_versions("name = 'blood-clot-detector'")) == 1

    images = [str(p) for p in study["images"][:3]]
    proc = run_main(capsys, "predict", "--tracking-uri", uri, *images)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["image"] for r in lines] == images
    threshold = float(champion.tags["threshold"])
    for r in lines:
        assert 0.0 <= r["probability"] <= 1.0 and r["label"] == int(r["probability"] >= threshold)

    # A plain Python process that knows nothing of clot-hpo.
    code = (
        "import mlflow, numpy as np; "
        "m = mlflow.pyfunc.load_model('models:/blood-clot-detector@champion'); "
        "x = np.load('batch.npy'); p = np.asarray(m.predict(x)); "
        "print(p.size, float(p.min()), float(p.max()))"
    )
    work = Path(images[0]).parent
    np.save(work / "batch.npy", study["pixels"][:5])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    size, low, high = out.stdout.split()[-3:]
    assert int(size) == 5 and 0.0 <= float(low) <= float(high) <= 1.0
