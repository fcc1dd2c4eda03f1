"""Using a registered model: resolve its URI, read how to apply it, load it.

A model URI may be ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
``models:/<model_id>`` or ``runs:/<run_id>/model``. How to apply the model (its decision
threshold and input image size) is read from the MLflow model's own ``metadata``
(``mlflow.models.get_model_info(uri).metadata``, written by
:mod:`clot_hpo.tracking.model_packaging`); the image size falls back to the signature.

Models are code: loading one with the wrong loader runs what its author put in it.
:func:`load_keras_model` therefore loads only the Keras flavor's ``.keras`` file, with Keras
safe mode on, never through MLflow's loaders (an ``MLmodel`` saying
``save_exported_model: true`` makes ``mlflow.keras`` call ``tf.saved_model.load``, which
bypasses safe mode; ``keras_module.txt`` names a module it imports). Exported SavedModels,
other flavors, Lambda layers and a file whose sha256 differs from the version's
``model_sha256`` tag (written by ``promote``) are refused with a ``ConfigError`` (exit 2).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clot_hpo.data.dicom import DicomSettings
from clot_hpo.errors import ConfigError
from clot_hpo.tracking.store import MlflowClient, MlflowException, global_tracking_uri, is_not_found
from clot_hpo.tracking.tags import (
    META_DICOM,
    META_IMAGE_SIZE,
    META_THRESHOLD,
    MODEL_FILE_PATH,
    TAG_MODEL_SHA256,
)
from clot_hpo.util import file_sha256, finite_float, first_line
from clot_hpo.yaml_io import read_yaml

log = logging.getLogger("clot_hpo.registry")

DEFAULT_MODEL_NAME = "blood-clot-detector"
DEFAULT_ALIAS = "champion"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@{DEFAULT_ALIAS}"
DEFAULT_THRESHOLD = 0.5

_MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")  # a logged model's id, as in models:/<model_id>
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")


@dataclass
class ResolvedModel:
    """A model URI made concrete: what to load and how to apply it."""

    uri: str  # as the user gave it
    load_uri: str  # what MLflow loads (an alias resolved to its version)
    name: str | None
    version: str | None
    run_id: str | None
    threshold: float
    image_size: int
    # The registered version's ``model_sha256`` tag (None: not a registered version, or no tag).
    model_sha256: str | None = None
    # The ``data.dicom`` settings it was trained with (None: a model logged before they were stored).
    dicom: DicomSettings | None = None


def alias_version(client: MlflowClient, model_name: str, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when the alias is not set."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def _registered_version(
    client: MlflowClient, tracking_uri: str, model_uri: str, name: str, alias: str | None, ref: str | None
) -> Any:
    """The version ``models:/name@alias`` or ``models:/name/ref`` names."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise  # a login problem, not a missing model: the command line says which
        raise ConfigError(
            f"registered model {name!r} does not exist at {tracking_uri} (run `clot-hpo promote` first)"
        ) from exc
    if alias:
        version = alias_version(client, name, alias)
        if version is None:
            raise ConfigError(
                f"model alias {alias!r} of {name!r} is not set at {tracking_uri} "
                "(run `clot-hpo promote` first)"
            )
        return version
    if ref is None:
        raise ConfigError(f"{model_uri!r}: name a version or an alias (models:/{name}@{DEFAULT_ALIAS})")
    try:
        return client.get_model_version(name, ref)
    except MlflowException as exc:
        raise ConfigError(
            f"version {ref!r} of registered model {name!r} does not exist at {tracking_uri}"
        ) from exc


def _model_info(tracking_uri: str, model_uri: str, load_uri: str) -> Any:
    with global_tracking_uri(tracking_uri):
        try:
            import mlflow.models

            return mlflow.models.get_model_info(load_uri)
        except (MlflowException, OSError) as exc:
            raise ConfigError(
                f"no MLflow model at {model_uri!r} ({load_uri}): {first_line(exc, limit=300)}"
            ) from exc


def _image_size(info: Any, load_uri: str) -> int:
    """The input size from the metadata, else from the signature's ``(-1, H, W, 3)``."""
    size = finite_float((info.metadata or {}).get(META_IMAGE_SIZE))
    if size is not None and size >= 1:
        return int(size)
    shape = info.signature.inputs.inputs[0].shape if info.signature else None
    if not shape or len(shape) != 4 or shape[1] is None or shape[1] < 1:
        raise ConfigError(f"{load_uri}: no image size stored with the model and none in its signature")
    return int(shape[1])


def resolve_model(client: MlflowClient, tracking_uri: str, model_uri: str) -> ResolvedModel:
    """Resolve ``models:/name@alias``, ``models:/name/version``, ``models:/<model_id>`` or ``runs:/``.

    The threshold and image size are the model's metadata; without a stored threshold the
    default (0.5) applies, with a warning.

    Raises:
        ConfigError: the registered model, version, alias, logged model or run does not exist.
    """
    name = version_str = run_id = sha256 = None
    load_uri = model_uri
    match = _MODELS_URI.match(model_uri)
    if match and _MODEL_ID.match(match["name"]) and not match["alias"] and not match["version"]:
        try:
            run_id = client.get_logged_model(match["name"]).source_run_id
        except MlflowException as exc:
            raise ConfigError(f"logged model {match['name']!r} does not exist at {tracking_uri}") from exc
    elif match:
        name = match["name"]
        version = _registered_version(client, tracking_uri, model_uri, name, match["alias"], match["version"])
        version_str, run_id = str(version.version), version.run_id
        sha256 = (getattr(version, "tags", None) or {}).get(TAG_MODEL_SHA256)
        load_uri = f"models:/{name}/{version_str}"
    elif model_uri.startswith("runs:/"):
        run_id = model_uri.split("/", 2)[1] if model_uri.count("/") >= 2 else ""
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(f"run {run_id!r} of {model_uri!r} does not exist at {tracking_uri}") from exc
    info = _model_info(tracking_uri, model_uri, load_uri)
    threshold = finite_float((info.metadata or {}).get(META_THRESHOLD))
    if threshold is None:
        log.warning("no decision threshold stored with %s; using %.2f", model_uri, DEFAULT_THRESHOLD)
        threshold = DEFAULT_THRESHOLD
    return ResolvedModel(
        uri=model_uri,
        load_uri=load_uri,
        name=name,
        version=version_str,
        run_id=run_id,
        threshold=threshold,
        image_size=_image_size(info, load_uri),
        model_sha256=sha256 or None,
        dicom=DicomSettings.from_metadata((info.metadata or {}).get(META_DICOM)),
    )


def keras_file_of_model(root: Path, uri: str) -> Path:
    """The ``.keras`` file of the MLflow model folder ``root``, once its ``MLmodel`` is acceptable.

    Raises:
        ConfigError: no ``MLmodel``; no Keras flavor; an exported SavedModel; no regular
            ``data/model.keras`` inside the folder.
    """
    try:
        # The one YAML reader (duplicate keys refused); its messages name the file, so say the URI too.
        spec = read_yaml(root / "MLmodel", what="MLmodel file")
    except (OSError, ConfigError) as exc:
        raise ConfigError(f"{uri}: no readable MLmodel file: {first_line(exc, limit=200)}") from exc
    flavors = spec.get("flavors")
    flavors = flavors if isinstance(flavors, dict) else {}
    keras_flavor = flavors.get("keras")
    if not isinstance(keras_flavor, dict):
        raise ConfigError(
            f"{uri} is not a Keras model (its flavors: {', '.join(map(str, flavors)) or 'none'}): "
            "clot-hpo loads only the Keras flavor from a .keras file, because loading other "
            "flavors runs code stored with the model"
        )
    if keras_flavor.get("save_exported_model"):
        raise ConfigError(
            f"{uri} is an exported TensorFlow SavedModel (save_exported_model: true in its MLmodel): "
            "loading one runs its graph outside Keras safe mode, so clot-hpo refuses it; "
            "log the model as a .keras file (clot-hpo search does)"
        )
    keras_file = root / MODEL_FILE_PATH
    inside = keras_file.resolve().is_relative_to(root.resolve())
    if keras_file.is_symlink() or not inside or not keras_file.is_file():
        raise ConfigError(
            f"{uri}: the Keras flavor has no regular file {MODEL_FILE_PATH} inside the model "
            "(clot-hpo loads only a .keras file)"
        )
    return keras_file


def _lambda_layers(keras_file: Path) -> list[str]:
    """The names of the Lambda layers in a ``.keras`` archive's ``config.json``."""
    try:
        with zipfile.ZipFile(keras_file) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return []  # not a Keras 3 archive: Keras itself says so below
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                inner = node.get("config")
                found.append(str(inner.get("name", "?")) if isinstance(inner, dict) else "?")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def load_keras_file(keras_file: Path, uri: str) -> Any:
    """``keras.saving.load_model(keras_file, safe_mode=True, compile=False)``, refusals as exit 2.

    Raises:
        ConfigError: the model has a Lambda layer (named), or Keras cannot or will not load it.
    """
    lambdas = _lambda_layers(keras_file)
    if lambdas:
        raise ConfigError(
            f"{uri} has a Lambda layer ({', '.join(repr(n) for n in lambdas)}): its function is "
            "Python code stored in the model file, which Keras safe mode refuses to load; "
            "clot-hpo never turns safe mode off"
        )
    import keras

    try:
        return keras.saving.load_model(keras_file, compile=False, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        why = "Keras safe mode refused it" if "safe_mode" in str(exc) else "Keras cannot load it"
        raise ConfigError(f"{uri}: {why}: {first_line(exc, limit=300)}") from exc


def load_keras_model(tracking_uri: str, resolved: ResolvedModel) -> Any:
    """The Keras model behind ``resolved``: its ``.keras`` file, checked, loaded in safe mode.

    The model's folder is downloaded, its ``MLmodel`` checked (:func:`keras_file_of_model`),
    the file's sha256 compared with the version's ``model_sha256`` tag when there is one, and
    the file loaded by Keras itself (:func:`load_keras_file`), not by ``mlflow.keras``.

    Raises:
        ConfigError: the model cannot be downloaded, is not an acceptable Keras model, or its
            file differs from the one ``promote`` registered.
    """
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="clot-hpo-model-") as tmp:
        with global_tracking_uri(tracking_uri):
            try:
                root = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=resolved.load_uri, dst_path=tmp, tracking_uri=tracking_uri
                    )
                )
            except (MlflowException, OSError) as exc:
                raise ConfigError(
                    f"cannot download the model {resolved.uri!r}: {first_line(exc, limit=300)}"
                ) from exc
        keras_file = keras_file_of_model(root, resolved.uri)
        if resolved.model_sha256:
            actual = file_sha256(keras_file)
            if actual != resolved.model_sha256.strip().lower():
                raise ConfigError(
                    f"{resolved.uri}: {MODEL_FILE_PATH} has sha256 {actual}, but the version's "
                    f"{TAG_MODEL_SHA256} tag says {resolved.model_sha256}: the file changed after "
                    "`promote` registered it, so it is not loaded"
                )
        return load_keras_file(keras_file, resolved.uri)


__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_URI",
    "DEFAULT_THRESHOLD",
    "ResolvedModel",
    "alias_version",
    "file_sha256",
    "keras_file_of_model",
    "load_keras_file",
    "load_keras_model",
    "resolve_model",
]
