"""``ClotHyperModel``: a KerasTuner HyperModel for both backbones and the tiny CNN.

``build(hp)`` reads every hyperparameter through the KerasTuner API, so it runs under
KerasTuner's own tuners and under clot-hpo's Optuna adapter alike. Values a search space
does not declare take the defaults below. Nothing here knows Optuna or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
import keras_tuner

from clot_hpo.augment import AugmentationSpec, build_augmentation
from clot_hpo.errors import ConfigError
from clot_hpo.models.backbones import create_backbone_with_info

# Values used when a search space does not declare a hyperparameter.
DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "batch_size": 32,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "dropout": 0.2,
    "pooling": "avg",
    "use_dense": False,
    "dense_units": 128,
    "freeze_epochs": 0,
    "unfreeze_fraction": 1.0,
    "aug_flip": True,
    "aug_rotation": 0.0,
    "aug_zoom": 0.0,
    "aug_contrast": 0.0,
    "aug_brightness": 0.0,
}
OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrialSettings:
    """Everything one trial's model and data need, resolved from ``hp`` and defaults."""

    backbone: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def image_size(self) -> int:  # noqa: D102
        return int(self.values["image_size"])

    @property
    def batch_size(self) -> int:  # noqa: D102
        return int(self.values["batch_size"])

    @property
    def freeze_epochs(self) -> int:  # noqa: D102
        return int(self.values["freeze_epochs"])


class ClotHyperModel(keras_tuner.HyperModel):
    """Binary clot classifier: augmentation -> backbone -> pooling -> dropout -> [dense] -> sigmoid.

    Args:
        spaces: search space per backbone name (objects with ``sample(hp, prefix=...)``);
            with more than one, ``backbone`` is itself a searched categorical and each
            backbone's parameters are conditional on it (and prefixed ``<backbone>.``).
        weights: ``"imagenet"``, a local weights file, or ``"none"``.
        target_specificity: when set, the ``sensitivity_at_specificity`` metric is tracked
            at this specificity during training (the study sets it for that objective).
        seed: seeds the augmentation layers.
    """

    def __init__(
        self,
        spaces: Mapping[str, Any],
        *,
        weights: str | None = "imagenet",
        target_specificity: float | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(name="clot_hypermodel", tunable=True)
        if not spaces:
            raise ConfigError("search.backbones must name at least one backbone")
        self.spaces = dict(spaces)
        self.weights = weights
        self.target_specificity = target_specificity
        self.seed = seed
        # Set by the caller when the VRAM budget shrinks the batch (effective batch kept).
        self.accumulation_steps = 1
        self.weights_used: str | None = None

    @property
    def pretrained(self) -> bool:
        """Whether the last built backbone got pretrained weights."""
        return bool(self.weights_used) and not str(self.weights_used).startswith("none")

    # A randomly initialized base has nothing to preserve: freezing it only keeps random
    # features (and BatchNorm statistics) fixed, so the schedule applies to pretrained bases.
    def _frozen_epochs(self, s: TrialSettings) -> int:
        return s.freeze_epochs if self.pretrained else 0

    def _unfreeze_fraction(self, s: TrialSettings) -> float:
        return float(s["unfreeze_fraction"]) if self.pretrained else 1.0

    # ----- hyperparameters --------------------------------------------------------------
    def settings(self, hp: keras_tuner.HyperParameters) -> TrialSettings:
        """Sample (or replay) every hyperparameter of one trial through ``hp``."""
        names = list(self.spaces)
        if len(names) == 1:
            backbone = names[0]
            sampled = self.spaces[backbone].sample(hp)
        else:
            backbone = hp.Choice("backbone", names)
            with hp.conditional_scope("backbone", [backbone]):
                sampled = self.spaces[backbone].sample(hp, prefix=f"{backbone}.")
        values = {**DEFAULTS, **sampled}
        if values["optimizer"] not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {list(OPTIMIZERS)}, but got {values['optimizer']!r}")
        return TrialSettings(backbone=backbone, values=values)

    # ----- model --------------------------------------------------------------------------
    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build and compile the classifier for the values in ``hp``."""
        s = self.settings(hp)
        size = s.image_size
        inputs = keras.Input((size, size, 3), dtype="float32", name="pixels")
        augment = build_augmentation(
            AugmentationSpec(
                flip=bool(s["aug_flip"]),
                rotation=float(s["aug_rotation"]),
                zoom=float(s["aug_zoom"]),
                contrast=float(s["aug_contrast"]),
                brightness=float(s["aug_brightness"]),
            ),
            seed=self.seed,
        )
        backbone = create_backbone_with_info(s.backbone, image_size=size, weights=self.weights)
        self.weights_used = backbone.weights_used
        x = backbone.model(augment(inputs))
        pooling = keras.layers.GlobalMaxPooling2D if s["pooling"] == "max" else keras.layers.GlobalAveragePooling2D
        x = pooling(name="pool")(x)
        x = keras.layers.Dropout(float(s["dropout"]), name="dropout")(x)
        if s["use_dense"]:
            x = keras.layers.Dense(int(s["dense_units"]), activation="relu", name="dense")(x)
            x = keras.layers.Dropout(float(s["dropout"]), name="dense_dropout")(x)
        # The output stays float32 under mixed precision for a numerically stable sigmoid.
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
        model = keras.Model(inputs, outputs, name=f"clot_{s.backbone}")
        set_trainable_fraction(
            model,
            0.0 if self._frozen_epochs(s) > 0 else self._unfreeze_fraction(s),
            freeze_batchnorm=self.pretrained,
        )
        self.compile(model, s)
        return model

    def compile(self, model: keras.Model, s: TrialSettings) -> None:
        """Compile with the trial's optimizer, loss and metrics (again after unfreezing)."""
        model.compile(
            optimizer=make_optimizer(s, accumulation_steps=self.accumulation_steps),
            loss=keras.losses.BinaryCrossentropy(label_smoothing=float(s["label_smoothing"])),
            metrics=self._metrics(),
        )

    def _metrics(self) -> list[keras.metrics.Metric]:
        metrics: list[keras.metrics.Metric] = [
            keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy"),
        ]
        if self.target_specificity is not None:
            # Only on request: its compile config does not round-trip through Keras 3.15's
            # saving (`get_config` of the compiled metric comes back None), which breaks
            # tuners that reload checkpoints, such as KerasTuner's.
            metrics.append(keras.metrics.SensitivityAtSpecificity(
                self.target_specificity, name="sensitivity_at_specificity"))
        return metrics

    # ----- training -----------------------------------------------------------------------
    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        """Transfer-learning schedule: base frozen for ``freeze_epochs``, then top fraction unfrozen.

        Accepts ``model.fit``'s arguments; returns a History whose ``history`` spans all epochs.
        """
        s = self.settings(hp)
        epochs = int(kwargs.pop("epochs", 1))
        frozen = min(self._frozen_epochs(s), epochs)
        if frozen == 0 or frozen == epochs:
            return model.fit(*args, epochs=epochs, **kwargs)
        first = model.fit(*args, epochs=frozen, **kwargs)
        set_trainable_fraction(model, self._unfreeze_fraction(s), freeze_batchnorm=self.pretrained)
        self.compile(model, s)  # Keras 3 needs a recompile after `trainable` changes.
        second = model.fit(*args, initial_epoch=frozen, epochs=epochs, **kwargs)
        merged = {k: list(first.history.get(k, [])) + list(v) for k, v in second.history.items()}
        second.history = merged
        second.epoch = list(first.epoch) + list(second.epoch)
        return second


def make_optimizer(s: TrialSettings, *, accumulation_steps: int = 1) -> keras.optimizers.Optimizer:
    """The trial's optimizer; ``accumulation_steps > 1`` keeps the effective batch size."""
    lr = float(s["learning_rate"])
    wd = float(s["weight_decay"]) or None
    accumulate = accumulation_steps if accumulation_steps > 1 else None
    name = s["optimizer"]
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=wd or 0.004, gradient_accumulation_steps=accumulate)
    if name == "sgd":
        return keras.optimizers.SGD(
            lr, momentum=float(s["momentum"]), nesterov=True, weight_decay=wd,
            gradient_accumulation_steps=accumulate,
        )
    return keras.optimizers.Adam(lr, weight_decay=wd, gradient_accumulation_steps=accumulate)


def set_trainable_fraction(model: keras.Model, fraction: float, *, freeze_batchnorm: bool = True) -> None:
    """Make the top ``fraction`` of the backbone's layers trainable, the rest frozen.

    With pretrained weights, BatchNormalization layers stay frozen (inference mode), as
    Keras' fine-tuning guide recommends for small datasets; randomly initialized backbones
    need their BatchNormalization statistics trained.
    """
    backbone = model.get_layer("backbone")
    layers = [layer for layer in _flatten(backbone) if layer.weights]
    if fraction <= 0 or not layers:
        backbone.trainable = False
        return
    backbone.trainable = True
    cut = len(layers) - max(1, math.ceil(fraction * len(layers)))
    for i, layer in enumerate(layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= cut and not (freeze_batchnorm and is_bn)


def _flatten(model: keras.Model) -> list[keras.layers.Layer]:
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flatten(layer))
        else:
            out.append(layer)
    return out
