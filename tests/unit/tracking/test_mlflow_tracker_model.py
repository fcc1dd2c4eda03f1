"""Logging the Keras model: an MLflow model with a signature, pinned requirements, weights."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from clot_hpo.tracking.mlflow_tracker import MlflowTracker
from clot_hpo.tracking.model_packaging import model_pip_requirements, model_signature
from clot_hpo.tracking.store import global_tracking_uri
from tests.support.mlflow_server import tiny_keras_model


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mlruns-model")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = MlflowTracker(
        uri, experiment_name="exp-model", artifact_root=str(root / "artifacts"), tries=2, backoff_s=0.01
    )
    tracker.check_available()
    tracker.start_study("study-model")
    run_id = tracker.start_trial(0)
    tracker.log_epoch(run_id, 0, {"val_auc": 0.5})
    tracker.log_evaluation(
        run_id, metrics={"val_auc": 0.7, "threshold": 0.37}, artifacts={}, figures={}, step=1
    )
    model = tiny_keras_model(32)
    dicom = {"window": [40.0, 400.0], "frame": None}
    tracker.log_model(run_id, model, image_size=32, threshold=0.37, step=1, dicom=dicom)
    tracker.end_trial(run_id, "COMPLETE")
    return {"uri": uri, "run_id": run_id, "model": model, "tracker": tracker, "root": root}


def test_model_is_attached_to_the_trial_run_and_ready(logged: dict) -> None:
    client = MlflowClient(logged["uri"])
    run = client.get_run(logged["run_id"])
    assert run.data.tags["threshold"] == "0.37" and run.data.tags["image_size"] == "32"
    model_id = run.data.tags["clot_hpo.model_id"]
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    assert run.outputs.model_outputs[0].step == 1  # the evaluation's step, after epoch 0
    model = client.get_logged_model(model_id)
    assert model.source_run_id == logged["run_id"] and model.status.name == "READY"
    assert "model.weights.h5" in {a.path for a in client.list_artifacts(logged["run_id"])}
    assert not mlflow.active_run()  # no fluent run was ever started


def test_signature_and_pinned_requirements(logged: dict) -> None:
    model_id = MlflowClient(logged["uri"]).get_run(logged["run_id"]).data.tags["clot_hpo.model_id"]
    with global_tracking_uri(logged["uri"]):
        info = mlflow.models.get_model_info(f"models:/{model_id}")
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}"))
    [spec] = info.signature.inputs.inputs
    assert spec.type == np.dtype(np.float32) and spec.shape == (-1, 32, 32, 3)
    assert info.signature.outputs.inputs[0].shape == (-1, 1)
    reqs = (local / "requirements.txt").read_text().split()
    assert all("==" in r for r in model_pip_requirements())
    assert set(model_pip_requirements()) <= set(reqs)
    assert any(r.startswith(("tensorflow-cpu==", "tensorflow==")) for r in reqs)
    assert not (local / "input_example.json").exists()
    metadata = yaml.safe_load((local / "MLmodel").read_text())["metadata"]
    assert metadata["image_size"] == 32 and metadata["threshold"] == 0.37
    assert metadata["dicom"] == {"window": [40.0, 400.0], "frame": None}  # how it was trained


def test_pyfunc_returns_one_probability_per_image(logged: dict) -> None:
    model_id = MlflowClient(logged["uri"]).get_run(logged["run_id"]).data.tags["clot_hpo.model_id"]
    batch = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    with global_tracking_uri(logged["uri"]):
        pyfunc = mlflow.pyfunc.load_model(f"models:/{model_id}")
    out = np.asarray(pyfunc.predict(batch))
    assert out.size == 5 and len(out) == 5
    assert np.all((out >= 0) & (out <= 1))
    np.testing.assert_allclose(
        out.reshape(-1), logged["model"].predict(batch, verbose=0).reshape(-1), rtol=1e-5
    )


def test_global_tracking_uri_is_restored(logged: dict) -> None:
    before = mlflow.get_tracking_uri()
    with global_tracking_uri(logged["uri"]):
        assert mlflow.get_tracking_uri() == logged["uri"]
    assert mlflow.get_tracking_uri() == before


def test_log_models_false_logs_no_model(logged: dict) -> None:
    tracker = MlflowTracker(logged["uri"], experiment_name="exp-model", log_models=False)
    run_id = logged["tracker"].start_trial(1)
    assert tracker.log_model(run_id, logged["model"], image_size=32, threshold=0.5) is None
    run = MlflowClient(logged["uri"]).get_run(run_id)
    assert "clot_hpo.model_id" not in run.data.tags and not run.outputs.model_outputs


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_file_flavor_writes_what_mlflow_keras_writes(logged: dict, tmp_path: Path) -> None:
    import mlflow.keras
    from mlflow.models import Model

    from clot_hpo.tracking import keras_file_flavor

    model, signature, reqs = logged["model"], model_signature(32), list(model_pip_requirements())
    keras_file = tmp_path / "trial.keras"
    model.save(keras_file)
    ref, ours = tmp_path / "ref", tmp_path / "ours"
    mlflow.keras.save_model(model, str(ref), signature=signature, pip_requirements=reqs)
    keras_file_flavor.save_model(
        str(ours), Model(), model=keras_file, signature=signature, pip_requirements=reqs
    )

    assert _files(ours) == _files(ref)
    ref_mlmodel, our_mlmodel = (yaml.safe_load((d / "MLmodel").read_text()) for d in (ref, ours))
    assert our_mlmodel["flavors"] == ref_mlmodel["flavors"]
    assert our_mlmodel["signature"] == ref_mlmodel["signature"]
    for name in ("requirements.txt", "conda.yaml", "python_env.yaml", "data/keras_module.txt"):
        assert (ours / name).read_text() == (ref / name).read_text(), name
    batch = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    loaded = mlflow.keras.load_model(str(ours))
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), model.predict(batch, verbose=0), rtol=1e-6)


def test_model_logged_from_a_saved_file(logged: dict, tmp_path: Path) -> None:
    keras_file = tmp_path / "model.keras"
    logged["model"].save(keras_file)
    tracker = logged["tracker"]
    run_id = tracker.start_trial(2)
    stored = tracker.log_model(run_id, keras_file, image_size=32, threshold=0.5)
    assert keras_file.is_file(), "the caller decides what happens to its file"
    client = MlflowClient(logged["uri"])
    model_id = client.get_run(run_id).data.tags["clot_hpo.model_id"]
    assert stored == model_id, "the tracker returns the stored model's id"
    batch = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    with global_tracking_uri(logged["uri"]):
        out = np.asarray(mlflow.pyfunc.load_model(f"models:/{model_id}").predict(batch)).reshape(-1)
    np.testing.assert_allclose(out, logged["model"].predict(batch, verbose=0).reshape(-1), rtol=1e-5)
    weights = Path(client.download_artifacts(run_id, "model.weights.h5", str(tmp_path)))
    import zipfile

    with zipfile.ZipFile(keras_file) as archive:
        assert weights.read_bytes() == archive.read("model.weights.h5")
