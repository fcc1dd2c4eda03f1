"""Using a registered model: resolve its URI, read how to apply it, load it.

A model URI may be ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
``models:/<model_id>`` or ``runs:/<run_id>/model``. How to apply the model (its decision
threshold and input image size) is read from the MLflow model's own ``metadata``
(``mlflow.models.get_model_info(uri).metadata``, written by
:mod:`clot_hpo.tracking.model_packaging`); the image size falls back to the signature.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.tracking.store import MlflowClient, MlflowException, global_tracking_uri, is_not_found
from clot_hpo.tracking.tags import META_IMAGE_SIZE, META_THRESHOLD
from clot_hpo.util import finite_float, first_line

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
    name = version_str = run_id = None
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
    )


def load_keras_model(tracking_uri: str, resolved: ResolvedModel) -> Any:
    """The Keras model behind ``resolved`` (``mlflow.keras.load_model``)."""
    import mlflow.keras

    with global_tracking_uri(tracking_uri):
        return mlflow.keras.load_model(resolved.load_uri)


__all__ = [
    "DEFAULT_ALIAS",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_URI",
    "DEFAULT_THRESHOLD",
    "ResolvedModel",
    "alias_version",
    "load_keras_model",
    "resolve_model",
]
