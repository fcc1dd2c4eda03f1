"""``mlflow.keras``'s model layout, written from a saved ``.keras`` file without Keras.

``mlflow.keras.save_model`` needs the live model and imports Keras (TensorFlow: ~5 s and
~400 MB). The study process, which logs every trial's model, has only the ``.keras`` file
that the trial's process saved, and must stay light. This module writes the same folder
that ``mlflow.keras.save_model`` writes (checked by ``tests/unit/tracking``), so
``mlflow.keras.load_model`` and ``mlflow.pyfunc.load_model`` read it as their own::

    MLmodel  conda.yaml  python_env.yaml  requirements.txt
    data/keras_module.txt  data/model.keras

It is used as the ``flavor`` of :meth:`mlflow.models.Model.log`, which only calls
``save_model(path=..., mlflow_model=..., **kwargs)`` on it.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

# The layout of mlflow/keras/save.py (MLflow 3.x): not importable without Keras.
FLAVOR_NAME = "keras"
DATA_DIR = "data"
MODEL_FILE = "model.keras"
KERAS_MODULE_FILE = "keras_module.txt"
# Inside a Keras 3 ``.keras`` archive.
WEIGHTS_MEMBER = "model.weights.h5"


def save_model(
    path: str,
    mlflow_model: Any,
    *,
    model: str | Path,
    signature: Any,
    pip_requirements: list[str],
    keras_backend: str = "tensorflow",
) -> None:
    """Write the MLflow model folder at ``path`` from the ``.keras`` file ``model``.

    Args:
        path: the folder to create (must not exist).
        mlflow_model: the :class:`mlflow.models.Model` to complete and save as ``MLmodel``.
        model: the saved Keras model (``.keras``).
        signature: the model signature.
        pip_requirements: exact requirements (no inference: it costs 8-10 s per model).
        keras_backend: the backend it was trained with.
    """
    from mlflow import pyfunc
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _process_pip_requirements,
        _PythonEnv,
    )

    data = Path(path) / DATA_DIR
    data.mkdir(parents=True)
    (data / KERAS_MODULE_FILE).write_text("keras")
    shutil.copyfile(model, data / MODEL_FILE)

    mlflow_model.signature = signature
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        data=DATA_DIR,
        keras_version=metadata.version("keras"),
        keras_backend=keras_backend,
        save_exported_model=False,
    )
    pyfunc.add_to_model(
        mlflow_model,
        loader_module="mlflow.keras",
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
    )
    mlflow_model.model_size_bytes = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))

    # MLflow's own environment writers (private, untyped): the files match mlflow.keras.save_model's.
    conda_env, requirements, _constraints = _process_pip_requirements(  # type: ignore[no-untyped-call]
        None, list(pip_requirements)
    )
    with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as fh:
        yaml.safe_dump(conda_env, stream=fh, default_flow_style=False)
    Path(path, _REQUIREMENTS_FILE_NAME).write_text("\n".join(requirements))
    _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))  # type: ignore[no-untyped-call]


def extract_weights(keras_file: str | Path, dest: str | Path) -> Path:
    """Copy the weights (``model.weights.h5``) out of a ``.keras`` archive into ``dest``.

    Cheaper than a second save: Keras stores the archive uncompressed.

    Raises:
        ValueError: the file is not a Keras 3 archive with weights.
    """
    dest = Path(dest)
    try:
        with (
            zipfile.ZipFile(keras_file) as archive,
            archive.open(WEIGHTS_MEMBER) as src,
            open(dest / WEIGHTS_MEMBER, "wb") as out,
        ):
            shutil.copyfileobj(src, out, length=4 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{keras_file} is not a Keras 3 archive with {WEIGHTS_MEMBER}: {exc}") from exc
    return dest / WEIGHTS_MEMBER
