"""A cross-validated trial's folds start from the same model: reset in place, or built again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import keras
import numpy as np

from clot_hpo.search.trial.cv import FreshModel


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 3)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    return model


def _fit(model: keras.Model) -> None:
    rng = np.random.default_rng(1)
    model.fit(rng.random((8, 4, 4, 3)), rng.integers(0, 2, 8).astype("float32"), epochs=2, verbose=0)


def _setup(build: Any = None) -> Any:
    return SimpleNamespace(seed=0, hp=None, hypermodel=SimpleNamespace(build=build))


def test_a_fold_starts_from_the_initial_weights_and_a_fresh_optimizer() -> None:
    model = _model()
    fresh = FreshModel(_setup(), model)
    initial = [np.array(v) for v in model.variables]
    _fit(model)
    assert int(model.optimizer.iterations) > 0
    assert not all(np.array_equal(a, np.array(v)) for a, v in zip(initial, model.variables, strict=True))
    again = fresh()
    assert again is model  # the same compiled model: its traced steps are kept
    assert all(np.array_equal(a, np.array(v)) for a, v in zip(initial, model.variables, strict=True))
    assert int(model.optimizer.iterations) == 0
    slots = [v for v in model.optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert slots and all(not np.any(np.array(v)) for v in slots)
    # Training from the reset model repeats the first training exactly.
    _fit(model)
    first = [np.array(v) for v in model.variables]
    fresh()
    _fit(model)
    assert all(np.allclose(a, np.array(v)) for a, v in zip(first, model.variables, strict=True))


def test_a_model_whose_trainable_layers_changed_is_built_again() -> None:
    built: list[keras.Model] = []

    def build(hp: Any) -> keras.Model:
        built.append(_model())
        return built[-1]

    model = _model()
    fresh = FreshModel(_setup(build), model)
    model.get_layer("conv").trainable = False  # as a transfer schedule's freeze would leave it
    again = fresh()
    assert built and again is built[0] and again is not model
