"""A trial's Keras model as an MLflow model: signature, pinned requirements, metadata, weights.

The study process logs every trial's model from the ``.keras`` file the trial's process
saved, without importing Keras (:mod:`clot_hpo.tracking.keras_file_flavor` writes the
folder ``mlflow.keras.save_model`` would). What :mod:`clot_hpo.registry` needs to apply a
model travels in the MLflow model's own ``metadata`` (``threshold``, ``image_size``), read
back with ``mlflow.models.get_model_info(uri).metadata``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from functools import lru_cache
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Any

from clot_hpo.tracking import keras_file_flavor
from clot_hpo.tracking.store import MAX_PARAM_LENGTH, MlflowClient, global_tracking_uri
from clot_hpo.tracking.tags import (
    META_DICOM,
    META_IMAGE_SIZE,
    META_INPUT,
    META_THRESHOLD,
    TAG_IMAGE_SIZE,
    TAG_STUDY,
    TAG_THRESHOLD,
)

log = logging.getLogger("clot_hpo.tracking")

MODEL_NAME_IN_RUN = "model"
MODEL_TYPE = "keras-binary-classifier"
INPUT_DESCRIPTION = "raw RGB pixels in [0, 255], float32"


@lru_cache(maxsize=1)
def model_pip_requirements() -> tuple[str, ...]:
    """Exact pins of what loading the model needs, from the installed versions.

    Passed explicitly because MLflow's inference of requirements costs 8-10 s per model.
    """
    reqs = []
    tf_dist = None
    for dist in ("tensorflow-cpu", "tensorflow", "tensorflow-macos"):
        with contextlib.suppress(dist_metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={dist_metadata.version(dist)}")
            tf_dist = dist
            break
    if tf_dist is None:
        log.debug("no TensorFlow distribution found for the model's requirements")
    for dist in ("keras", "mlflow", "numpy"):
        with contextlib.suppress(dist_metadata.PackageNotFoundError):
            reqs.append(f"{dist}=={dist_metadata.version(dist)}")
    return tuple(reqs)


def model_signature(image_size: int) -> Any:
    """Raw float32 pixels ``(-1, H, W, 3)`` in [0, 255] in, probabilities ``(-1, 1)`` out."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(image_size), int(image_size), 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1))]),
    )


def model_metadata(image_size: int, threshold: float, dicom: dict[str, Any] | None = None) -> dict[str, Any]:
    """The MLflow model's ``metadata``: how to apply it (read by the registry)."""
    meta = {META_IMAGE_SIZE: int(image_size), META_THRESHOLD: float(threshold), META_INPUT: INPUT_DESCRIPTION}
    return meta if dicom is None else {**meta, META_DICOM: dict(dicom)}


@contextlib.contextmanager
def keras_file_of(model: Any) -> Any:
    """The ``.keras`` file of ``model``: the path itself, or a temporary save of a live model."""
    if isinstance(model, (str, Path)):
        yield Path(model)
        return
    with tempfile.TemporaryDirectory(prefix="clot-hpo-model-") as tmp:
        keras_file = Path(tmp) / keras_file_flavor.MODEL_FILE
        model.save(keras_file)
        yield keras_file


def log_keras_model(
    client: MlflowClient,
    tracking_uri: str,
    run_id: str,
    keras_file: Path,
    *,
    image_size: int,
    threshold: float,
    step: int,
    dicom: dict[str, Any] | None = None,
) -> str:
    """Log ``keras_file`` as the MLflow model ``model`` of the run; return its model id.

    The model has a signature, explicit pinned ``pip_requirements``, the metadata of
    :func:`model_metadata`, and no ``input_example`` (it crashes ``mlflow.keras.log_model``
    in MLflow 3.17). ``step`` is the run's step the model belongs to (the evaluation's), so
    the UI links the evaluation metrics, not epoch 0's, to the model.
    """
    from mlflow.models import Model

    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=MODEL_NAME_IN_RUN,
        source_run_id=run_id,
        params={k: v[:MAX_PARAM_LENGTH] for k, v in run.data.params.items()},
        # Shown on the model's page in the UI; `predict` reads the MLmodel metadata instead.
        tags={
            TAG_THRESHOLD: repr(float(threshold)),
            TAG_IMAGE_SIZE: str(int(image_size)),
            **{k: v for k, v in run.data.tags.items() if k == TAG_STUDY},
        },
        model_type=MODEL_TYPE,
    )
    with global_tracking_uri(tracking_uri):
        # Model.log (what mlflow.keras.log_model calls) takes `run_id` and `model_id`: the
        # model is attached to this run without any fluent active run.
        Model.log(
            artifact_path=None,
            name=MODEL_NAME_IN_RUN,
            flavor=keras_file_flavor,
            model=keras_file,
            run_id=run_id,
            model_id=logged.model_id,
            signature=model_signature(image_size),
            pip_requirements=list(model_pip_requirements()),
            metadata=model_metadata(image_size, threshold, dicom),
            await_registration_for=0,
            step=step,
        )
    return str(logged.model_id)


def log_weights(client: MlflowClient, run_id: str, keras_file: Path) -> None:
    """Attach the weights file (``model.weights.h5``, copied out of the archive) to the run."""
    with tempfile.TemporaryDirectory(prefix="clot-hpo-weights-") as tmp:
        client.log_artifact(run_id, str(keras_file_flavor.extract_weights(keras_file, tmp)))


__all__ = [
    "MODEL_NAME_IN_RUN",
    "keras_file_of",
    "log_keras_model",
    "log_weights",
    "model_metadata",
    "model_pip_requirements",
    "model_signature",
]
