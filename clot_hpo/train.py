"""Fit a built model with per-epoch callbacks; predict probabilities. No Optuna, no MLflow.

The search layer passes ``on_epoch_end``: it reports to Optuna (and may raise to prune),
logs to the tracker and prints the per-epoch line. Keeping that out of here lets the same
training code run under any tuner.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from clot_hpo.errors import TrialFailed

EpochHook = Callable[[int, dict[str, float], float], None]


class _EpochHook(keras.callbacks.Callback):
    """Calls ``hook(epoch, logs, seconds)`` after every epoch; exceptions propagate."""

    def __init__(self, hook: EpochHook) -> None:
        super().__init__()
        self._hook = hook
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        clean = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}
        self._hook(epoch, clean, time.perf_counter() - self._started)


def train(
    hypermodel: Any,
    hp: Any,
    model: keras.Model,
    train_data: Any,
    val_data: Any,
    *,
    epochs: int,
    steps_per_epoch: int | None = None,
    on_epoch_end: EpochHook | None = None,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    class_weight: dict[int, float] | None = None,
) -> dict[str, list[float]]:
    """Train through ``hypermodel.fit`` (so HyperModels that override ``fit`` keep working).

    Args:
        initial_epoch: the first epoch to run (0-based): a trial resumed from a checkpoint
            continues at the epoch after it.
        callbacks: Keras callbacks run before ``on_epoch_end`` (a checkpoint's, say).
        class_weight: each class's loss weight (:func:`class_weights`); None weighs all alike.

    Returns:
        The Keras history of the epochs run: metric name -> one value per epoch.
    """
    hooks = [*callbacks, *([_EpochHook(on_epoch_end)] if on_epoch_end else [])]
    # Only when resuming: a HyperModel's own `fit` need not know the argument otherwise.
    resume: dict[str, Any] = {"initial_epoch": initial_epoch} if initial_epoch else {}
    if class_weight is not None:  # likewise: only when weighting
        resume["class_weight"] = class_weight
    history = hypermodel.fit(
        hp,
        model,
        train_data,
        validation_data=val_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=hooks,
        verbose=0,
        **resume,
    )
    raw = history.history if hasattr(history, "history") else dict(history or {})
    return {k: [float(x) for x in v] for k, v in raw.items()}


def class_weights(labels: Any, rule: str) -> dict[int, float] | None:
    """Keras' ``class_weight`` for a rule: None for ``none``; ``n / (2 n_c)`` per class for ``balanced``.

    ``balanced`` is scikit-learn's ``compute_class_weight("balanced")``: each class then
    contributes half of the loss, so a rare positive class counts as much as the negatives.

    Raises:
        ValueError: an unknown rule, or ``balanced`` with a class missing from ``labels``.
    """
    if rule == "none":
        return None
    if rule != "balanced":
        raise ValueError(f"class_weight must be none or balanced, but got {rule!r}")
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    counts = np.bincount(y, minlength=2)[:2]
    if y.size == 0 or counts.min() == 0:
        raise ValueError(
            f"balanced class weights need both classes in training, but got counts {counts.tolist()}"
        )
    return {c: float(y.size / (2.0 * counts[c])) for c in (0, 1)}


def monitored_value(logs: dict[str, float], key: str, epoch: int) -> float:
    """``logs[key]`` after ``epoch`` (0-based), the value the search reports and prunes on.

    Raises:
        TrialFailed: the value is missing or NaN: the run diverged.
    """
    value = logs.get(key)
    if value is None or value != value:  # NaN: the run diverged
        raise TrialFailed(f"{key} is {value} at epoch {epoch + 1} (diverged?)")
    return float(value)


def format_epoch(
    number: int,
    epoch: int,
    epochs: int,
    logs: dict[str, float],
    seconds: float,
    side: int | None = None,
) -> str:
    """The console line of trial ``number``'s epoch ``epoch`` (0-based) of ``epochs``.

    ``side``: the image side the epoch trained and validated at, when the trial's size changes
    between epochs (progressive resizing, a resolution fidelity).
    """
    keys = ("loss", "auc", "val_loss", "val_auc", "val_accuracy")
    parts = [f"{k} {logs[k]:.4f}" for k in keys if k in logs]
    at = f" · {side}px" if side is not None else ""
    return f"  trial {number} · epoch {epoch + 1}/{epochs}{at} · " + " · ".join(parts) + f" · {seconds:.1f}s"


def progressive_sides(
    image_size: int,
    epochs: int,
    *,
    start_fraction: float,
    full_size_epoch: int,
    multiple: int = 8,
    min_side: int = 16,
) -> list[int]:
    """Progressive resizing's image side for each epoch (0-based), growing to ``image_size``.

    Epoch 1 is served at ``start_fraction`` of the side; the side grows linearly and reaches
    ``image_size`` at epoch ``full_size_epoch`` (1-based; capped at the last epoch, so a trial
    always ends, and is valued, at full size). Sides are rounded down to a multiple of
    ``multiple`` (each distinct size costs the model one more trace) and never below
    ``min_side`` (the backbone's smallest input).

    Raises:
        ValueError: a fraction outside (0, 1] or a non-positive count.
    """
    if not 0 < start_fraction <= 1 or epochs < 1 or full_size_epoch < 1 or multiple < 1 or image_size < 1:
        raise ValueError(
            "`0 < start_fraction <= 1` and positive epochs, full_size_epoch, multiple and image_size "
            f"must hold, but got {start_fraction}, {epochs}, {full_size_epoch}, {multiple}, {image_size}"
        )
    full_at = min(full_size_epoch, epochs) - 1  # 0-based
    sides = []
    for epoch in range(epochs):
        if epoch >= full_at:
            sides.append(image_size)
            continue
        fraction = start_fraction + (1.0 - start_fraction) * epoch / full_at
        side = int(image_size * fraction) // multiple * multiple
        sides.append(min(image_size, max(min_side, side)))
    return sides


def inference_copy(model: keras.Model, image_size: int | None = None) -> keras.Model:
    """An uncompiled functional copy of ``model`` (same layers and weights), the one to save.

    A saved model is for inference and must not carry training metrics that Keras cannot
    deserialize (``SensitivityAtSpecificity``'s compile config does not round-trip in Keras 3.15).
    A model built for any side (progressive resizing) is given ``image_size``'s input: predict,
    serve and Grad-CAM read the size from the model.
    """
    source = fixed_size(model, image_size)
    return keras.Model(source.inputs, source.outputs, name=model.name)


def _open_sides(model: keras.Model) -> bool:
    return any(d is None for d in tuple(model.inputs[0].shape)[1:3])


def fixed_size(model: keras.Model, image_size: int | None) -> keras.Model:
    """``model`` with its input fixed at ``image_size`` square, sharing its layers and weights.

    A model built for any side (``Input((None, None, 3))``) is called again on a fixed-size input
    (``clone_model`` with the layers themselves, not copies); any other model is returned as is.
    """
    if image_size is None or not _open_sides(model):
        return model
    inputs = keras.Input((image_size, image_size, 3), dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda layer: layer)


# Up to this many batches, predictions run eagerly: tracing the forward pass costs as much as
# ~5-10 eager batches of EfficientNetB1 on a CPU (docs/performance.md); beyond, one trace.
EAGER_PREDICT_MAX_BATCHES = 8


def predict_probabilities(model: keras.Model, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities over a finite ``(images, labels)`` dataset.

    Few batches run eagerly; more run through one traced function whose batch dimension is
    left open, so the last, smaller batch does not trace the model again (``model.predict``
    traces twice when the last batch is partial: Keras calls its function on each batch's
    tensors, with ``reduce_retracing``). The traced function is kept on the model, so the
    validation and test splits share one trace.
    """
    batches = int(data.cardinality()) if hasattr(data, "cardinality") else -1
    forward = _traced_forward(model) if batches < 0 or batches > EAGER_PREDICT_MAX_BATCHES else None
    labels, probs = [], []
    for images, y in data:
        out = forward(images) if forward is not None else model(images, training=False)
        probs.append(np.asarray(out, dtype="float64").reshape(-1))
        labels.append(np.asarray(y).reshape(-1))
    if not labels:
        return np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(labels).astype(int), np.concatenate(probs)


def _traced_forward(model: keras.Model) -> Callable[[Any], Any]:
    """``model(x, training=False)`` as one ``tf.function`` for any batch size, made once per model."""
    import tensorflow as tf

    forward = _FORWARD.get(model)
    if forward is None:
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], model.inputs[0].dtype)
        forward = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        _FORWARD[model] = forward
    return forward


_FORWARD: weakref.WeakKeyDictionary[keras.Model, Callable[[Any], Any]] = weakref.WeakKeyDictionary()
