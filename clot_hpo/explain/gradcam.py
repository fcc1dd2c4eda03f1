"""Grad-CAM (Selvaraju et al., 2017) for any Keras functional binary classifier.

The map is computed on the last 4-D feature map of the model's graph, found automatically:
for clot-hpo's models that is the output of the nested ``backbone`` (the last convolutional
stage of ResNet50 / EfficientNetB1, the last pooled block of the tiny CNN). The gradient is
taken of the positive class's logit, not of its probability: a confident sigmoid saturates
(p = 1.0 in float32 has a zero gradient), the logit does not, and the normalized map is the
same otherwise (the two gradients differ by the positive factor p(1 - p)).

Nothing here loads a model: callers pass a Keras model in (the registry loads registered ones).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def feature_layer(model: Any) -> Any:
    """The last top-level layer of ``model`` whose output is a 4-D feature map ``(N, h, w, k)``.

    Layers of a functional model are listed in topological order, so the last 4-D output is
    the one closest to the prediction. A nested model (the product's ``backbone``) counts as
    one layer: its output is the backbone's last feature map.

    Raises:
        ValueError: the model has no 4-D intermediate output (for example a dense-only model).
    """
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # never called: no output to explain
            continue
        if len(shape) == 4:
            return layer
    raise ValueError(
        f"Grad-CAM needs a 4-D feature map (N, h, w, channels) inside the model, but {model.name!r} has none"
    )


def _sigmoid_head(model: Any) -> Any | None:
    """The final ``Dense(1, sigmoid)`` layer when the model ends in one, else None."""
    import keras

    head = model.layers[-1]
    if (
        isinstance(head, keras.layers.Dense)
        and int(head.units) == 1
        and head.activation is keras.activations.sigmoid
        and len(model.outputs) == 1
    ):
        return head
    return None


class GradCam:
    """Probabilities and Grad-CAM maps of a binary classifier, in one forward and backward pass.

    Args:
        model: a Keras functional model taking raw float32 pixels ``(N, H, W, 3)`` and
            returning the positive-class probability ``(N, 1)``.
        layer: the name of the layer whose output to explain (default: :func:`feature_layer`).
        compiled: trace the computation once (``tf.function``) for repeated calls; False
            runs it eagerly, cheaper for a single call.
    """

    def __init__(self, model: Any, layer: str | None = None, *, compiled: bool = True) -> None:
        import keras
        import tensorflow as tf

        self.model = model
        self.layer = model.get_layer(layer) if layer else feature_layer(model)
        head = _sigmoid_head(model)
        # The graph is rebuilt with the same layers (shared weights) to reach the feature map
        # as a tensor of the outer graph: a nested model's own ``.output`` is its inner
        # tensor, which is not connected to the outer model's input.
        captured: dict[str, Any] = {}

        def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
            out = layer(*args, **kwargs)
            if layer is self.layer:
                captured["features"] = out
            if layer is head:  # its input: the logit is computed from it below
                captured["pre"] = args[0]
            return out

        rebuilt = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
        # With a sigmoid head, the head's input gives the logit (kernel and bias applied here).
        target = captured["pre"] if head is not None else rebuilt.outputs[0]
        # A single input as a tensor, not a one-element list: calls then pass a plain tensor.
        inputs = rebuilt.inputs[0] if len(rebuilt.inputs) == 1 else rebuilt.inputs
        graph = keras.Model(inputs, [captured["features"], target], name=f"{model.name}_gradcam")
        _, height, width, channels = model.input_shape

        def run(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                features, pre = graph(images, training=False)
                if head is not None:
                    kernel = tf.cast(tf.convert_to_tensor(head.kernel), tf.float32)
                    bias = tf.cast(tf.convert_to_tensor(head.bias), tf.float32)
                    logit = tf.matmul(tf.cast(pre, tf.float32), kernel) + bias
                else:  # some other head: explain its output as given
                    logit = tf.cast(pre, tf.float32)
                score = tf.reduce_sum(logit[:, 0])  # images are independent: one backward pass for all
            grads = tf.cast(tape.gradient(score, features), tf.float32)
            features32 = tf.cast(features, tf.float32)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel
            cam = tf.nn.relu(tf.reduce_sum(weights * features32, axis=-1))
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            # A map with no positive evidence stays all zero instead of dividing by zero.
            cam = tf.math.divide_no_nan(cam, peak)
            prob = tf.sigmoid(logit[:, 0]) if head is not None else logit[:, 0]
            return prob, cam

        spec = tf.TensorSpec((None, height, width, channels), tf.float32)
        # Tracing pays off for a server's many calls; a one-off call (a trial's gallery) is
        # cheaper eagerly: tracing EfficientNetB1's gradient takes seconds.
        self._run = tf.function(run, input_signature=[spec], reduce_retracing=True) if compiled else run
        self.image_size = (int(height), int(width))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (N,), maps (N, h, w) in [0, 1])`` of raw float32 pixels ``(N, H, W, 3)``."""
        batch = np.asarray(images, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.shape[1:3] != self.image_size:
            raise ValueError(
                f"images must be {self.image_size[0]}x{self.image_size[1]} (the model's input), "
                f"but got {batch.shape[1]}x{batch.shape[2]}"
            )
        prob, cam = self._run(batch)
        return np.asarray(prob, dtype=np.float64), np.asarray(cam, dtype=np.float32)


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """A map resized (bilinear) to ``height x width``, values kept in [0, 1]."""
    from PIL import Image

    resized = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F").resize(
        (int(width), int(height)), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def overlay(image: np.ndarray, cam: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """The map drawn over ``image`` (uint8 RGB, any size) as uint8 RGB of the image's size.

    The colour is blended in proportion to the map's value, so regions the model ignored
    keep the original pixels and stay readable.
    """
    from matplotlib import colormaps

    rgb = np.asarray(image)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    rgb = rgb[..., :3].astype(np.float32)
    heat = upsample(cam, rgb.shape[0], rgb.shape[1])
    colours = np.asarray(colormaps[colormap](heat), dtype=np.float32)[..., :3] * 255.0
    weight = (alpha * heat)[..., None]
    blended = np.clip(rgb * (1.0 - weight) + colours * weight, 0, 255)
    return np.asarray(blended.round(), dtype=np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A uint8 RGB array as PNG bytes (fast compression: these are served and thrown away)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


__all__ = ["GradCam", "feature_layer", "overlay", "png_bytes", "upsample"]
