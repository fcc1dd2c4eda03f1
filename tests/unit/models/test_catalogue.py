"""The backbone and optimizer catalogues: one place per concept, readable without Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from clot_hpo.budget.estimator import OPTIMIZER_SLOTS
from clot_hpo.config import ExperimentConfig
from clot_hpo.errors import ConfigError
from clot_hpo.models import BACKBONES, OPTIMIZERS, get_backbone_spec, get_optimizer_spec, list_optimizers
from clot_hpo.models.hypermodel import batchnorm_momentum_for, set_batchnorm_momentum


def test_the_config_accepts_exactly_the_catalogues_backbones() -> None:
    for name in BACKBONES:
        assert ExperimentConfig.model_validate({"name": "x", "search": {"backbones": [name]}})
    with pytest.raises(ValueError, match=r"backbone must be one of .* but got 'vgg16'"):
        ExperimentConfig.model_validate({"name": "x", "search": {"backbones": ["vgg16"]}})


def test_estimator_slots_come_from_the_optimizer_catalogue() -> None:
    assert {name: spec.slots for name, spec in OPTIMIZERS.items()} == OPTIMIZER_SLOTS
    assert list_optimizers() == ["adam", "adamw", "sgd"]


def test_unknown_names_state_the_rule() -> None:
    with pytest.raises(
        ConfigError, match=r"optimizer must be one of \['adam', 'adamw', 'sgd'\], but got 'lamb'"
    ):
        get_optimizer_spec("lamb")
    with pytest.raises(ConfigError, match=r"backbone must be one of .* but got 'vgg16'"):
        get_backbone_spec("vgg16")


def test_only_backbones_with_published_weights_are_pretrained() -> None:
    assert {name for name, spec in BACKBONES.items() if spec.pretrained} == {"efficientnet_b1", "resnet50"}


@pytest.mark.parametrize(
    ("steps", "expected"), [(None, 0.9), (1, 0.5), (13, 0.01 ** (1 / 13)), (10_000, 0.99)]
)
def test_batchnorm_momentum_forgets_the_initial_statistics_within_an_epoch(
    steps: int | None, expected: float
) -> None:
    assert batchnorm_momentum_for(steps) == pytest.approx(expected)
    if steps and 3 < steps < 400:
        assert batchnorm_momentum_for(steps) ** steps == pytest.approx(0.01)


def test_set_batchnorm_momentum_reaches_nested_layers() -> None:
    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((4,)), inner, keras.layers.BatchNormalization()])
    set_batchnorm_momentum(model, 0.7)
    moms = [layer.momentum for layer in (inner.layers[0], model.layers[1])]
    assert moms == [0.7, 0.7]
    with pytest.raises(ConfigError, match="`0 <= bn_momentum < 1` must hold, but got bn_momentum=1.0"):
        set_batchnorm_momentum(model, 1.0)
    assert np.isfinite(model(np.ones((2, 4), "float32"))).all()
