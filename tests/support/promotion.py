"""Studies made for promotion tests, without training: real MLflow runs, a real Optuna storage.

:func:`fabricate_study` writes what ``clot-hpo search`` leaves behind, as far as ``promote``
reads it: the study's parent run (objective, direction, dataset digest, ``config.yaml``,
``data/split_manifest.csv``), one child run per trial with metrics, a tiny Keras model
(:func:`tests.support.mlflow_server.tiny_keras_model`) and ``test_predictions.csv``; and, in
the Optuna storage, the study with one trial per run carrying the ledger the search records
(``mlflow_run_id``, ``mlflow_parent_run_id``, ``dataset_digest``, the metrics, the sha256 of
the model file and of the predictions files, the model id on the study:
:mod:`clot_hpo.search.ledger`).

:func:`predictions` draws a test set's predictions: the same ``seed`` gives the same images
(keys and labels); ``separation`` sets how well the model ranks them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.support.mlflow_server import tiny_keras_model


def predictions(
    n: int = 120, *, separation: float = 1.0, seed: int = 0, noise_seed: int = 1, prevalence: float = 0.5
) -> pd.DataFrame:
    """``key,label,probability`` for ``n`` test images; keys and labels depend on seed and prevalence."""
    rng = np.random.default_rng(seed)
    keys = [hashlib.sha256(f"image-{seed}-{i}".encode()).hexdigest() for i in range(n)]
    n_pos = round(n * prevalence)
    labels = np.r_[np.ones(n_pos, dtype=int), np.zeros(n - n_pos, dtype=int)]
    rng.shuffle(labels)
    noise = np.random.default_rng(noise_seed).normal(0.0, 1.0, n)
    score = separation * (labels - 0.5) * 2 + noise
    probability = np.round(1.0 / (1.0 + np.exp(-score)), 6)
    return pd.DataFrame({"key": keys, "label": labels, "probability": probability})


def _manifest(frame: pd.DataFrame) -> pd.DataFrame:
    test = pd.DataFrame(
        {"relpath": [f"img/{k[:8]}.png" for k in frame["key"]], "label": frame["label"], "split": "test"}
    )
    train = pd.DataFrame(
        {"relpath": [f"train/{i}.png" for i in range(40)], "label": [1, 0] * 20, "split": "train"}
    )
    val = pd.DataFrame({"relpath": [f"val/{i}.png" for i in range(20)], "label": [1, 0] * 10, "split": "val"})
    out = pd.concat([train, val, test], ignore_index=True)
    out["sha256"] = [hashlib.sha256(p.encode()).hexdigest() for p in out["relpath"]]
    return out


def record_ledger(
    study: Any,
    trial: Any,
    *,
    run_id: str,
    parent: str,
    digest: str,
    metrics: dict[str, float],
    model_id: str | None = None,
    model_file: Path | None = None,
    artifacts: dict[str, str] | None = None,
) -> None:
    """Write a trial's ledger as the search does (:mod:`clot_hpo.search.ledger`).

    ``trial`` is an ``optuna.Trial`` not told yet; ``artifacts`` the predictions files' texts
    as they were logged; ``model_file`` the ``.keras`` file the run's model was logged from.
    """
    from clot_hpo.search.ledger import (
        ATTR_DIGEST,
        ATTR_MODEL_SHA256,
        ATTR_PARENT_RUN_ID,
        ATTR_RUN_ID,
        ATTR_TEST_PREDICTIONS_SHA256,
        ATTR_VAL_PREDICTIONS_SHA256,
        record_model_id,
    )
    from clot_hpo.util import file_sha256, text_sha256

    facts: dict[str, Any] = {ATTR_RUN_ID: run_id, ATTR_PARENT_RUN_ID: parent, ATTR_DIGEST: digest}
    facts.update({k: float(v) for k, v in metrics.items()})
    for file, attr in (
        ("test_predictions.csv", ATTR_TEST_PREDICTIONS_SHA256),
        ("val_predictions.csv", ATTR_VAL_PREDICTIONS_SHA256),
    ):
        if file in (artifacts or {}):
            facts[attr] = text_sha256((artifacts or {})[file])
    if model_file is not None:
        facts[ATTR_MODEL_SHA256] = file_sha256(model_file)
    for key, value in facts.items():
        trial.set_user_attr(key, value)
    if model_id is not None:
        record_model_id(study, trial.number, model_id)


def fabricate_study(
    tracking_uri: str,
    storage: str,
    root: Path,
    name: str,
    trials: list[dict[str, Any]],
    *,
    digest: str = "digest-shared",
    objective: str = "val_auc",
    direction: str | None = "maximize",
    synthetic: bool = True,
    evaluation: dict[str, Any] | None = None,
) -> dict[int, str]:
    """A study ``name`` (experiment and Optuna study) with one trial per entry; trial number -> run id.

    Each entry: ``metrics`` (dict, logged on the run), and optionally ``predictions`` (a
    frame: logged as ``test_predictions.csv``), ``val_predictions`` (``val_predictions.csv``,
    from which `report` recomputes the threshold), ``state`` (COMPLETE, PRUNED or FAIL),
    ``model`` (False: no model), ``seed`` (of the tiny model). ``evaluation``: keys of the
    study config's ``evaluation`` section (``prevalence``, ...).
    """
    import optuna

    from clot_hpo.evaluate import binary_metrics
    from clot_hpo.tracking.mlflow_tracker import MlflowTracker

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tracker = MlflowTracker(
        tracking_uri, experiment_name=name, artifact_root=str(root / "artifacts"), tries=2, backoff_s=0.01
    )
    tracker.check_available()
    parent = tracker.start_study(name, objective=objective if direction else None, direction=direction)
    first = next((t["predictions"] for t in trials if t.get("predictions") is not None), predictions())
    manifest = root / "manifests" / name / "split_manifest.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    _manifest(first).to_csv(manifest, index=False)
    config = {
        "seed": 7,
        "data": {
            "path": "data/synthetic" if synthetic else "data/real",
            "synthetic": {} if synthetic else None,
        },
        "evaluation": {"threshold": "youden", "confidence_level": 0.95, **(evaluation or {})},
    }
    tracker.log_study_inputs(config=config, search_spaces={}, manifest_path=manifest, dataset_digest=digest)
    # What `prepare_data` reports, as the study run keeps it (data/data_report.json).
    report = {
        "grouped": False,
        "source": "synthetic" if synthetic else "folder",
        "layout": "folders",
        "leakage": {"has_leakage": True, "n_exact": 2, "n_near": 1, "within_split_exact": 0},
    }
    tracker.client.log_text(parent, json.dumps(report), "data/data_report.json")
    study = optuna.create_study(
        study_name=name, storage=storage, direction=direction or "maximize", load_if_exists=True
    )
    runs = {}
    for number, spec in enumerate(trials):
        run_id = tracker.start_trial(number)
        tracker.log_params(run_id, {"backbone": "tiny_cnn", "image_size": 32, "epochs": 3})
        artifacts: dict[str, Any] = {}
        metrics = dict(spec["metrics"])
        if spec.get("predictions") is not None:
            frame = spec["predictions"]
            artifacts["test_predictions.csv"] = frame.to_csv(index=False)
            # The test metrics with intervals, as a trial's evaluation logs them.
            tested = binary_metrics(
                frame["label"],
                frame["probability"],
                threshold=metrics.get("threshold", 0.5),
                n_bootstrap=100,
                prevalence=config["evaluation"].get("prevalence"),
            )
            # Test metrics the entry gives itself win (a test may need exact values).
            metrics = {**{f"test_{k}": v for k, v in tested.items()}, **metrics}
        if spec.get("val_predictions") is not None:
            artifacts["val_predictions.csv"] = spec["val_predictions"].to_csv(index=False)
        tracker.log_evaluation(run_id, metrics=metrics, artifacts=artifacts, figures={})
        keras_file = model_id = None
        if spec.get("model", True):
            # Saved once, so the sha256 in the ledger is the logged file's (as a trial does).
            keras_file = root / "models" / name / f"{number}" / "model.keras"
            keras_file.parent.mkdir(parents=True, exist_ok=True)
            tiny_keras_model(32, seed=spec.get("seed", number)).save(keras_file)
            threshold = spec["metrics"].get("threshold", 0.5)
            model_id = tracker.log_model(run_id, keras_file, image_size=32, threshold=threshold)
            assert model_id is not None
        state = spec.get("state", "COMPLETE")
        tracker.end_trial(run_id, state)
        runs[number] = run_id
        trial = study.ask()
        assert trial.number == number
        trial.set_user_attr("weights_used", "none (random initialisation)")
        record_ledger(
            study,
            trial,
            run_id=run_id,
            parent=parent,
            digest=digest,
            metrics=metrics,
            model_id=model_id,
            model_file=keras_file,
            artifacts=artifacts,
        )
        if state == "COMPLETE":
            study.tell(trial, float(spec["metrics"].get(objective, 0.0)))
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    tracker.end_study()
    return runs


__all__ = ["fabricate_study", "predictions", "record_ledger"]
