"""Fit a built model with per-epoch callbacks; predict probabilities. No Optuna, no MLflow.

The search layer passes ``on_epoch_end``: it reports to Optuna (and may raise to prune),
logs to the tracker and prints the per-epoch line. Keeping that out of here lets the same
training code run under any tuner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

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
) -> dict[str, list[float]]:
    """Train through ``hypermodel.fit`` (so HyperModels that override ``fit`` keep working).

    Returns:
        The Keras history: metric name -> one value per epoch.
    """
    callbacks = [_EpochHook(on_epoch_end)] if on_epoch_end else []
    history = hypermodel.fit(
        hp,
        model,
        train_data,
        validation_data=val_data,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=0,
    )
    raw = history.history if hasattr(history, "history") else dict(history or {})
    return {k: [float(x) for x in v] for k, v in raw.items()}


def predict_probabilities(model: keras.Model, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predicted probabilities over a finite ``(images, labels)`` dataset."""
    labels, probs = [], []
    for images, y in data:
        probs.append(np.asarray(model(images, training=False), dtype="float64").reshape(-1))
        labels.append(np.asarray(y).reshape(-1))
    if not labels:
        return np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(labels).astype(int), np.concatenate(probs)
