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
from clot_hpo.models.optimizers import OptimizerSettings, get_optimizer_spec

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
    # Loss weight per class: none, or balanced (n / (2 n_class) of the training split); the
    # config's training.class_weight replaces this default, a search space may search it.
    "class_weight": "none",
    # BatchNormalization momentum of a randomly initialized base; None: from the epoch's
    # length (see `batchnorm_momentum_for`). Pretrained bases keep their statistics frozen.
    "bn_momentum": None,
}


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
        class_weight: ``none`` or ``balanced``, for trials whose search space does not
            declare ``class_weight`` (the config's ``training.class_weight``).
    """

    def __init__(
        self,
        spaces: Mapping[str, Any],
        *,
        weights: str | None = "imagenet",
        target_specificity: float | None = None,
        seed: int | None = None,
        class_weight: str = "none",
    ) -> None:
        super().__init__(name="clot_hypermodel", tunable=True)
        _check_class_weight(class_weight)
        self.class_weight = class_weight
        if not spaces:
            raise ConfigError("search.backbones must name at least one backbone")
        self.spaces = dict(spaces)
        self.weights = weights
        self.target_specificity = target_specificity
        self.seed = seed
        # Set by the caller when the VRAM budget shrinks the batch (effective batch kept).
        self.accumulation_steps = 1
        # Keras' `jit_compile` for every compile (the config's `training.jit_compile`).
        self.jit_compile: bool | str = "auto"
        self.weights_used: str | None = None
        # The study's record of a failed ImageNet download (set by the search): not tried again.
        self.imagenet_unavailable: str | None = None
        # Build for inputs of any side (a progressive-resizing or resolution-fidelity trial).
        self.variable_input_size = False
        self._pretrained = False

    @property
    def pretrained(self) -> bool:
        """Whether the last built backbone got trained weights (ImageNet or a local file).

        Offline, ImageNet weights fall back to random initialization: this says which one the
        model actually has, so budgets and schedules follow the weights, not the request.
        """
        return self._pretrained

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
        values = {**DEFAULTS, "class_weight": self.class_weight, **sampled}
        get_optimizer_spec(str(values["optimizer"]))  # a clear error for an unknown name
        _check_class_weight(values["class_weight"])
        return TrialSettings(backbone=backbone, values=values)

    # ----- model --------------------------------------------------------------------------
    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build and compile the classifier for the values in ``hp``."""
        s = self.settings(hp)
        # Global pooling makes every backbone's head independent of the side: a model built
        # for any side trains on each epoch's size with the same weights.
        size = None if self.variable_input_size else s.image_size
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
        backbone = create_backbone_with_info(
            s.backbone, image_size=size, weights=self.weights, imagenet_unavailable=self.imagenet_unavailable
        )
        self.weights_used = backbone.weights_used
        self._pretrained = backbone.pretrained
        x = backbone.model(augment(inputs))
        pooling = (
            keras.layers.GlobalMaxPooling2D if s["pooling"] == "max" else keras.layers.GlobalAveragePooling2D
        )
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
            jit_compile=self.jit_compile,
        )

    def _metrics(self) -> list[keras.metrics.Metric]:
        metrics: list[keras.metrics.Metric] = [
            keras.metrics.AUC(name="auc"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
        ]
        if self.target_specificity is not None:
            # Only on request: its compile config does not round-trip through Keras 3.15's
            # saving (`get_config` of the compiled metric comes back None), which breaks
            # tuners that reload checkpoints, such as KerasTuner's.
            metrics.append(
                keras.metrics.SensitivityAtSpecificity(
                    self.target_specificity, name="sensitivity_at_specificity"
                )
            )
        return metrics

    # ----- training -----------------------------------------------------------------------
    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> keras.callbacks.History:
        """Transfer-learning schedule: base frozen for ``freeze_epochs``, then top fraction unfrozen.

        Accepts ``model.fit``'s arguments; returns a History whose ``history`` spans the epochs
        run. With ``initial_epoch=k`` (a resumed trial) it starts at epoch k, in the schedule's
        phase that epoch belongs to.
        """
        s = self.settings(hp)
        epochs = int(kwargs.pop("epochs", 1))
        initial = int(kwargs.pop("initial_epoch", 0) or 0)
        if not self.pretrained:
            momentum = s["bn_momentum"]
            if momentum is None:
                momentum = batchnorm_momentum_for(_steps_per_epoch(args, kwargs))
            set_batchnorm_momentum(model, float(momentum))
        frozen = min(self._frozen_epochs(s), epochs)
        if frozen == 0 or frozen == epochs:
            return model.fit(*args, initial_epoch=initial, epochs=epochs, **kwargs)
        if initial >= frozen:  # resumed after the base was unfrozen: straight to the second phase
            set_trainable_fraction(model, self._unfreeze_fraction(s), freeze_batchnorm=self.pretrained)
            self.compile(model, s)
            return model.fit(*args, initial_epoch=initial, epochs=epochs, **kwargs)
        first = model.fit(*args, initial_epoch=initial, epochs=frozen, **kwargs)
        set_trainable_fraction(model, self._unfreeze_fraction(s), freeze_batchnorm=self.pretrained)
        self.compile(model, s)  # Keras 3 needs a recompile after `trainable` changes.
        second = model.fit(*args, initial_epoch=frozen, epochs=epochs, **kwargs)
        merged = {k: list(first.history.get(k, [])) + list(v) for k, v in second.history.items()}
        second.history = merged
        second.epoch = list(first.epoch) + list(second.epoch)
        return second


CLASS_WEIGHTS = ("none", "balanced")


def _check_class_weight(value: object) -> None:
    if value not in CLASS_WEIGHTS:
        raise ConfigError(f"class_weight must be one of {list(CLASS_WEIGHTS)}, but got {value!r}")


def make_optimizer(s: TrialSettings, *, accumulation_steps: int = 1) -> keras.optimizers.Optimizer:
    """The trial's optimizer (from the catalogue); ``accumulation_steps > 1`` keeps the effective batch."""
    spec = get_optimizer_spec(str(s["optimizer"]))
    return spec.make(
        OptimizerSettings(
            learning_rate=float(s["learning_rate"]),
            weight_decay=float(s["weight_decay"]),
            momentum=float(s["momentum"]),
            accumulation_steps=accumulation_steps,
        )
    )


# Bounds of the automatic BatchNormalization momentum. 0.99 is Keras' default, right for long
# epochs; below 0.5 the moving statistics follow single batches too closely.
_BN_MOMENTUM_RANGE = (0.5, 0.99)


def batchnorm_momentum_for(steps_per_epoch: int | None) -> float:
    """The momentum that forgets the initial moving statistics within one epoch.

    Keras' default (0.99) keeps 0.99**n of the initial mean 0 and variance 1 after n steps:
    after the dozen steps of a small dataset's epoch, inference-mode outputs of a randomly
    initialized EfficientNet or ResNet are still computed with those initial statistics and
    collapse to one value for every image (validation AUC exactly 0.5). Choosing m with
    m**n = 0.01 leaves 1% after one epoch; long epochs get Keras' 0.99.

    Args:
        steps_per_epoch: training steps per epoch; None (unknown) gives 0.9.
    """
    low, high = _BN_MOMENTUM_RANGE
    if not steps_per_epoch or steps_per_epoch <= 0:
        return 0.9
    return float(min(high, max(low, 0.01 ** (1.0 / steps_per_epoch))))


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """Set every BatchNormalization layer's momentum (before ``fit`` traces the train step)."""
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"`0 <= bn_momentum < 1` must hold, but got bn_momentum={momentum}")
    for layer in _flatten(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _steps_per_epoch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """Training steps per epoch of a ``fit`` call, when they can be known without iterating."""
    if kwargs.get("steps_per_epoch"):
        return int(kwargs["steps_per_epoch"])
    data: Any = args[0] if args else kwargs.get("x")  # anything Model.fit accepts
    cardinality = getattr(data, "cardinality", None)
    if callable(cardinality):  # tf.data: negative means infinite or unknown
        n = int(cardinality())
        return n if n > 0 else None
    try:
        length = len(data)
    except TypeError:
        return None
    if hasattr(data, "__getitem__") and not hasattr(data, "shape"):
        return int(length)  # a keras.utils.PyDataset or Sequence: one batch per item
    batch = int(kwargs.get("batch_size") or 32)
    return max(1, -(-int(length) // batch))


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
