"""The backbone catalogue: one entry per backbone, and ``create_backbone`` to build one.

Each :class:`BackboneSpec` keeps together everything the rest of the package needs to know
about a backbone (its name, its builder, whether published ImageNet weights exist for it,
what preprocessing its graph does), the way timm's ``register_model`` does. The config
schema, the CLI and the VRAM estimator read names from :data:`BACKBONES`; nothing else
lists them.

This module imports Keras only inside builders, so the config schema and the VRAM
estimator can read the catalogue without TensorFlow. Every backbone maps raw pixels in
[0, 255] (float32, shape (S, S, 3)) to a feature map, with its own preprocessing inside the
graph, so a saved model takes raw pixels. Only built-in Keras layers are used, so a saved
model loads in a plain Python process without this package.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clot_hpo.errors import ConfigError
from clot_hpo.util import first_line

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# ImageNet channel means in BGR order, as keras.applications.resnet50.preprocess_input uses.
_RESNET_BGR_MEAN = (103.939, 116.779, 123.68)

IMAGENET_UNAVAILABLE = "none (imagenet unavailable"
"""How ``weights_used`` starts when the ImageNet download failed and the base is random."""

Builder = Callable[[Any, "str | None"], Any]
"""``(inputs, weights) -> keras.Model``; ``weights`` is ``None`` or ``"imagenet"``."""


@dataclass(frozen=True)
class BackboneSpec:
    """One catalogue entry.

    Attributes:
        name: the name used in configs, search spaces and on the command line.
        build: the builder (see :data:`Builder`).
        pretrained: published ImageNet weights exist (``training.weights: imagenet``);
            without them the base is trained whole from random initialization.
        preprocessing: what the graph does to raw pixels before the first convolution.
        min_image_size: the smallest input side the builder accepts.
    """

    name: str
    build: Builder
    pretrained: bool
    preprocessing: str
    min_image_size: int = 32


@dataclass(frozen=True)
class Backbone:
    """A built backbone and the weights it actually got."""

    model: keras.Model
    weights_used: str

    @property
    def pretrained(self) -> bool:
        """Whether the weights are trained ones (ImageNet or a local file), not random."""
        return not self.weights_used.startswith("none")


def _resnet_preprocess(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """ResNet50's caffe preprocessing (RGB->BGR, minus the ImageNet mean) as a frozen 1x1 conv.

    A fixed convolution does exactly what ``preprocess_input`` does and, unlike a ``Lambda``
    or a custom layer, serializes as a built-in layer, so saved models load anywhere.
    """
    import keras
    import numpy as np

    layer = keras.layers.Conv2D(3, 1, name="resnet_preprocess", trainable=False)
    outputs = layer(inputs)
    flip_rgb_to_bgr = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_channel, in_channel in enumerate((2, 1, 0)):
        flip_rgb_to_bgr[0, 0, in_channel, out_channel] = 1.0
    layer.set_weights([flip_rgb_to_bgr, -np.asarray(_RESNET_BGR_MEAN, dtype="float32")])
    return outputs


def _build_efficientnet_b1(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    import keras

    return keras.applications.EfficientNetB1(include_top=False, weights=weights, input_tensor=inputs)


def _build_resnet50(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    import keras

    base = keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=tuple(inputs.shape[1:])
    )
    return keras.Model(inputs, base(_resnet_preprocess(inputs)), name="resnet50_with_preprocessing")


def _build_tiny_cnn(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    """A three-block CNN for tests and CPU demos; it has no published weights."""
    import keras

    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    return keras.Model(inputs, x, name="tiny_cnn")


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "efficientnet_b1",
            _build_efficientnet_b1,
            pretrained=True,
            preprocessing="rescaling and normalization inside keras.applications.EfficientNetB1",
        ),
        BackboneSpec(
            "resnet50",
            _build_resnet50,
            pretrained=True,
            preprocessing="caffe: RGB to BGR minus the ImageNet mean, as a frozen 1x1 convolution",
        ),
        BackboneSpec(
            "tiny_cnn",
            _build_tiny_cnn,
            pretrained=False,
            min_image_size=16,
            preprocessing="rescaling to [0, 1]",
        ),
    )
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`, sorted."""
    return sorted(BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The catalogue entry of ``name``.

    Raises:
        ConfigError: ``name`` is not in the catalogue.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"backbone must be one of {list_backbones()}, but got {name!r}") from None


def create_backbone_with_info(
    name: str,
    *,
    image_size: int | None,
    weights: str | None = None,
    imagenet_unavailable: str | None = None,
) -> Backbone:
    """Build a backbone and report which weights it got.

    Args:
        name: one of :func:`list_backbones`.
        image_size: side of the square input in pixels; ``None`` builds for any size (a
            progressive-resizing trial's images grow between epochs; global pooling follows).
        weights: ``"imagenet"`` (downloaded when reachable), a local weights file, or
            ``None``/``"none"`` for random initialization.
        imagenet_unavailable: the ``weights_used`` of an earlier build whose ImageNet download
            failed (the study remembers it): ImageNet is then not tried again, the backbone
            starts from random initialization and reports the same ``weights_used``.

    Returns:
        The backbone named ``"backbone"`` and a human-readable description of its weights.
    """
    import keras

    spec = get_backbone_spec(name)
    if image_size is not None and image_size < spec.min_image_size:
        raise ConfigError(
            f"`image_size >= {spec.min_image_size}` must hold for {name}, but got image_size={image_size}"
        )
    requested = None if weights in (None, "", "none", "None") else weights
    if requested == "imagenet" and not spec.pretrained:
        requested = None  # no published weights for it; a local file still loads
    known_failure = requested == "imagenet" and imagenet_unavailable is not None
    if known_failure:
        requested = None  # offline: every attempt would print Keras' download line and fail again
    if requested not in (None, "imagenet") and not Path(requested).is_file():
        raise ConfigError(f"training.weights: weights file {requested!r} does not exist")

    def _build(w: str | None) -> keras.Model:
        inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="pixels")
        if w in (None, "imagenet"):
            return spec.build(inputs, w)
        model = spec.build(inputs, None)
        model.load_weights(w)
        return model

    weights_used = "none (random initialization)"
    if known_failure and imagenet_unavailable is not None:
        model = _build(None)
        weights_used = imagenet_unavailable
    elif requested is None:
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
            reason = first_line(exc, limit=160)
            log.warning("ImageNet weights for %s unavailable (%s); using random initialization", name, reason)
            model = _build(None)
            # The trial's record, the model card and the registry page show this: no URL, no errno
            # soup ("URL fetch failure on https://...: None -- [Errno -2] ..."); the log keeps it all.
            short = re.sub(r"\s*(on\s+)?https?://\S+(\s*None)?", "", reason).split(" -- ")[0].rstrip(" :")
            weights_used = f"{IMAGENET_UNAVAILABLE}: {short[:80]})"
    model.name = "backbone"
    return Backbone(model=model, weights_used=weights_used)


def create_backbone(name: str, *, image_size: int | None, weights: str | None = None) -> keras.Model:
    """Build backbone ``name`` for square ``image_size`` inputs (see :func:`create_backbone_with_info`)."""
    return create_backbone_with_info(name, image_size=image_size, weights=weights).model
