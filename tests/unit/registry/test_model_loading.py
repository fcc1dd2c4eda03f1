"""Models are code: only a Keras ``.keras`` file is loaded, in safe mode, and checked first.

Issue 12, item 1. Each crafted model below was loaded (or crashed with "unexpected error",
exit 1) before; now each is refused with exit 2 and a sentence saying why.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from mlflow import MlflowClient

from clot_hpo.errors import ConfigError
from clot_hpo.registry import predict_command
from clot_hpo.tracking.mlflow_tracker import MlflowTracker
from clot_hpo.tracking.store import global_tracking_uri
from clot_hpo.tracking.tags import MODEL_FILE_PATH, TAG_MODEL_ID, TAG_MODEL_SHA256
from tests.support.mlflow_server import tiny_keras_model, write_images


def _lambda_model() -> Any:
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="sneaky_lambda")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One registered version per case, each logged the way a study logs a trial's model."""
    root = tmp_path_factory.mktemp("model-loading")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = MlflowTracker(
        uri, experiment_name="trust", artifact_root=str(root / "artifacts"), tries=1, backoff_s=0.01
    )
    tracker.check_available()
    tracker.start_study("trust")
    client = MlflowClient(uri, registry_uri=uri)
    cases = ("good", "exported", "pyfunc", "lambda", "tampered", "tagged")
    folders: dict[str, Path] = {}
    for number, case in enumerate(cases):
        run_id = tracker.start_trial(number)
        model = _lambda_model() if case == "lambda" else tiny_keras_model(32, seed=number)
        assert tracker.log_model(run_id, model, image_size=32, threshold=0.5)
        tracker.end_trial(run_id, "COMPLETE")
        model_id = client.get_run(run_id).data.tags[TAG_MODEL_ID]
        folder = Path(url2pathname(urlparse(client.get_logged_model(model_id).artifact_location).path))
        client.create_registered_model(case)
        with global_tracking_uri(uri):  # the registry resolves the models:/ source through it
            client.create_model_version(case, source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
        folders[case] = folder
    tracker.end_study()

    mlmodel = folders["exported"] / "MLmodel"
    text = mlmodel.read_text()
    assert "save_exported_model: false" in text
    mlmodel.write_text(text.replace("save_exported_model: false", "save_exported_model: true"))
    # Only the pyfunc flavor left, naming a loader module of the author's choice.
    mlmodel = folders["pyfunc"] / "MLmodel"
    text = re.sub(r"  keras:\n(    .*\n)+", "", mlmodel.read_text())
    mlmodel.write_text(text.replace("loader_module: mlflow.keras", "loader_module: os"))
    assert "keras:" not in mlmodel.read_text()
    # `promote` recorded the file's sha256; the file was replaced afterwards.
    client.set_model_version_tag(
        "tampered", "1", TAG_MODEL_SHA256, hashlib.sha256(b"the original").hexdigest()
    )
    digest = hashlib.sha256((folders["tagged"] / MODEL_FILE_PATH).read_bytes()).hexdigest()
    client.set_model_version_tag("tagged", "1", TAG_MODEL_SHA256, digest)
    images = write_images(root / "images", 2)
    return {"uri": uri, "images": images}


def _predict(store: dict[str, Any], name: str) -> int:
    args = argparse.Namespace(
        tracking_uri=store["uri"], model=f"models:/{name}/1", paths=[str(p) for p in store["images"]]
    )
    return predict_command(args)


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("exported", r"exported TensorFlow SavedModel \(save_exported_model: true.*refuses it"),
        ("pyfunc", r"is not a Keras model \(its flavors: python_function\).*runs code"),
        ("lambda", r"Lambda layer \('sneaky_lambda'\).*safe mode"),
        ("tampered", r"has sha256 [0-9a-f]{64}, but the version's model_sha256 tag says"),
    ],
)
def test_unsafe_models_are_refused_with_a_reason(store: dict[str, Any], case: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        _predict(store, case)


def test_a_keras_model_whose_file_matches_its_tag_loads(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _predict(store, "tagged") == 0
    assert _predict(store, "good") == 0, "a version without the tag (registered before it) still loads"
    assert capsys.readouterr().out.count('"probability"') == 4


def test_a_safe_mode_refusal_is_exit_2_on_the_command_line(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from clot_hpo.cli import main

    monkeypatch.setenv("PYTHONWARNINGS", "")  # main() sets it for its children
    code = main(
        ["predict", "--tracking-uri", store["uri"], "--model", "models:/lambda/1", str(store["images"][0])]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "sneaky_lambda" in err and "unexpected error" not in err
