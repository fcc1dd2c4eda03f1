"""Backbone registry: ``create_backbone`` and ``list_backbones``.

Every backbone maps raw pixels in [0, 255] (float32, shape (S, S, 3)) to a feature map, with
its own preprocessing inside the graph, so a saved model takes raw pixels. Only built-in
Keras layers are used, so a saved model loads in a plain Python process without this package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from clot_hpo.errors import ConfigError

log = logging.getLogger(__name__)

# ImageNet channel means in BGR order, as keras.applications.resnet50.preprocess_input uses.
_RESNET_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    """A built backbone and the weights it actually got."""

    model: keras.Model
    weights_used: str


def _resnet_preprocess(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """ResNet50's caffe preprocessing (RGB->BGR, minus the ImageNet mean) as a frozen 1x1 conv.

    A fixed convolution does exactly what ``preprocess_input`` does and, unlike a ``Lambda``
    or a custom layer, serializes as a built-in layer, so saved models load anywhere.
    """
    layer = keras.layers.Conv2D(3, 1, name="resnet_preprocess", trainable=False)
    outputs = layer(inputs)
    flip_rgb_to_bgr = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_channel, in_channel in enumerate((2, 1, 0)):
        flip_rgb_to_bgr[0, 0, in_channel, out_channel] = 1.0
    layer.set_weights([flip_rgb_to_bgr, -np.asarray(_RESNET_BGR_MEAN, dtype="float32")])
    return outputs


def _build_efficientnet_b1(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    # Keras EfficientNet rescales and normalizes inside the model: it takes [0, 255] as is.
    return keras.applications.EfficientNetB1(include_top=False, weights=weights, input_tensor=inputs)


def _build_resnet50(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    base = keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=tuple(inputs.shape[1:])
    )
    return keras.Model(inputs, base(_resnet_preprocess(inputs)), name="resnet50_with_preprocessing")


def _build_tiny_cnn(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    """A three-block CNN for tests and CPU demos; it has no pretrained weights."""
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    return keras.Model(inputs, x, name="tiny_cnn")


_REGISTRY: dict[str, Callable[[keras.KerasTensor, str | None], keras.Model]] = {
    "efficientnet_b1": _build_efficientnet_b1,
    "resnet50": _build_resnet50,
    "tiny_cnn": _build_tiny_cnn,
}
_PRETRAINED = {"efficientnet_b1", "resnet50"}


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return sorted(_REGISTRY)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ConfigError(f"backbone must be one of {list_backbones()}, but got {name!r}")


def create_backbone_with_info(
    name: str, *, image_size: int, weights: str | None = None
) -> Backbone:
    """Build a backbone and report which weights it got.

    Args:
        name: one of :func:`list_backbones`.
        image_size: side of the square input in pixels.
        weights: ``"imagenet"`` (downloaded when reachable), a local weights file, or
            ``None``/``"none"`` for random initialization.

    Returns:
        The backbone named ``"backbone"`` and a human-readable description of its weights.
    """
    _check_name(name)
    if image_size < 16:
        raise ConfigError(f"image_size must be >= 16, but got {image_size}")
    build = _REGISTRY[name]
    requested = None if weights in (None, "", "none", "None") else weights
    if requested == "imagenet" and name not in _PRETRAINED:
        requested = None  # the tiny CNN has no published weights; a local file still loads
    if requested not in (None, "imagenet") and not Path(requested).is_file():
        raise ConfigError(f"training.weights: weights file {requested!r} does not exist")

    def _build(w: str | None) -> keras.Model:
        inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
        if w is None or name in _PRETRAINED:
            return build(inputs, w)
        model = build(inputs, None)
        model.load_weights(w)
        return model

    weights_used = "none (random initialization)"
    if requested is None:
        model = _build(None)
    else:
        try:
            model = _build(requested)
            weights_used = requested
        except Exception as exc:  # noqa: BLE001 - Keras raises a bare Exception when offline
            # keras.utils.get_file raises a generic Exception("URL fetch failure ...") when the
            # download fails (https://github.com/keras-team/keras/issues/19450): fall back.
            if requested != "imagenet":
                raise ConfigError(f"training.weights: cannot load {requested!r}: {exc}") from exc
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            log.warning("ImageNet weights for %s unavailable (%s); using random initialization", name, reason)
            model = _build(None)
            weights_used = f"none (imagenet unavailable: {reason})"
    model.name = "backbone"
    return Backbone(model=model, weights_used=weights_used)


def create_backbone(name: str, *, image_size: int, weights: str | None = None) -> keras.Model:
    """Build backbone ``name`` for square ``image_size`` inputs (see :func:`create_backbone_with_info`)."""
    return create_backbone_with_info(name, image_size=image_size, weights=weights).model
