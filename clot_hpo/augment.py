"""Augmentation as Keras preprocessing layers, built from hyperparameter values.

The layers live inside the model, where Keras applies them only in training; at inference
(validation, test, a saved model) they pass pixels through unchanged. This module reads no
files and samples nothing: it receives plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class AugmentationSpec:
    """Strengths of each augmentation; 0 (or False) leaves it out."""

    flip: bool = True
    rotation: float = 0.0
    zoom: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rotation", "zoom", "contrast", "brightness"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation `{name}` must be in [0, 1], but got {value}")


def build_augmentation(spec: AugmentationSpec, *, seed: int | None = None) -> keras.layers.Layer:
    """A ``keras.Sequential`` of the augmentations ``spec`` turns on (pixels in [0, 255]).

    With every augmentation off it is an ``Identity`` layer (an empty Sequential cannot build).
    """
    layers: list[keras.layers.Layer] = []
    if spec.flip:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if spec.rotation > 0:
        layers.append(keras.layers.RandomRotation(spec.rotation, fill_mode="reflect", seed=seed))
    if spec.zoom > 0:
        layers.append(keras.layers.RandomZoom(spec.zoom, fill_mode="reflect", seed=seed))
    if spec.contrast > 0:
        # RandomContrast clips to [0, 255] by default, matching our raw-pixel inputs.
        layers.append(keras.layers.RandomContrast(spec.contrast, seed=seed))
    if spec.brightness > 0:
        layers.append(keras.layers.RandomBrightness(spec.brightness, value_range=(0.0, 255.0), seed=seed))
    if not layers:
        return keras.layers.Identity(name="augmentation")
    return keras.Sequential(layers, name="augmentation")
