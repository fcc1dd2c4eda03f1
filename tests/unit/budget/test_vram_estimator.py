"""The VRAM estimator: terms from real parameter counts and layer shapes, and the 4 GB verdicts."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import clot_hpo
from clot_hpo.budget import VramBudget, backbone_profile, estimate_vram
from clot_hpo.budget.estimator import FLOAT32_BYTES, head_profile
from clot_hpo.errors import ConfigError
from clot_hpo.models import create_backbone

FOUR_GB = VramBudget.from_gb(4)  # the default 10 % safety margin


def _params(model: keras.Model) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def _flat_output_elements(model: keras.Model) -> int:
    """Per-sample output elements of every leaf layer, through ``layer.output`` (nested opened)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _flat_output_elements(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            total += math.prod(int(d) for d in layer.output.shape[1:])
    return total


def test_public_name_is_the_estimator() -> None:
    assert clot_hpo.estimate_vram is estimate_vram


def test_weights_term_is_parameter_count_times_four_bytes() -> None:
    model = create_backbone("tiny_cnn", image_size=32)
    channels = int(model.outputs[0].shape[-1])
    head = channels * 256 + 256 + 256 + 1  # dense(256) then dense(1)
    for mixed in (False, True):
        est = estimate_vram("tiny_cnn", 32, 4, mixed_precision=mixed)
        assert est.total_params == _params(model) + head
        assert est.weights_bytes == est.total_params * FLOAT32_BYTES
    assert estimate_vram("tiny_cnn", 32, 4, mixed_precision=True).weight_copies_bytes == est.total_params * 2
    assert estimate_vram("tiny_cnn", 32, 4).weight_copies_bytes == 0


def test_efficientnet_parameter_count_matches_keras() -> None:
    reference = keras.applications.EfficientNetB1(include_top=False, weights=None, input_shape=(240, 240, 3))
    est = estimate_vram("efficientnet_b1", 240, 16, mixed_precision=True, head_units=0)
    assert est.total_params == reference.count_params() + 1280 + 1
    assert est.weights_bytes == est.total_params * 4


def test_activations_come_from_every_layer_output_including_nested_models() -> None:
    for name, size in (("tiny_cnn", 32), ("resnet50", 64)):  # resnet50 nests keras' ResNet50
        model = create_backbone(name, image_size=size)
        assert backbone_profile(name, size).activation_elements == _flat_output_elements(model)


def test_activation_term_scales_with_batch_and_element_size() -> None:
    profile = backbone_profile("tiny_cnn", 32)
    _, head_acts = head_profile(profile.feature_shape, 256)
    for mixed, element in ((False, 4), (True, 2)):
        est = estimate_vram("tiny_cnn", 32, 8, mixed_precision=mixed)
        expected = 8 * profile.input_elements * 4 + 8 * (profile.activation_elements + head_acts) * element
        assert est.activations_bytes == expected


def test_estimate_grows_with_batch_size_and_image_size() -> None:
    small = estimate_vram("tiny_cnn", 32, 4)
    assert estimate_vram("tiny_cnn", 32, 8).total_bytes > small.total_bytes
    assert estimate_vram("tiny_cnn", 32, 8).activations_bytes > small.activations_bytes
    bigger = estimate_vram("tiny_cnn", 64, 4)
    assert bigger.activations_bytes > small.activations_bytes
    assert bigger.total_bytes > small.total_bytes
    assert (
        estimate_vram("efficientnet_b1", 480, 16).total_bytes
        > estimate_vram("efficientnet_b1", 240, 16).total_bytes
    )


def test_estimate_shrinks_under_mixed_precision_and_head_only() -> None:
    full = estimate_vram("efficientnet_b1", 240, 16)
    mixed = estimate_vram("efficientnet_b1", 240, 16, mixed_precision=True)
    head = estimate_vram("efficientnet_b1", 240, 16, trainable="head")
    assert mixed.total_bytes < full.total_bytes
    assert mixed.activations_bytes < 0.6 * full.activations_bytes
    assert head.total_bytes < full.total_bytes
    assert head.activations_bytes < full.activations_bytes
    head_params, _ = head_profile(backbone_profile("efficientnet_b1", 240).feature_shape, 256)
    assert head.trainable_params == head_params
    assert head.gradients_bytes == head_params * 4
    assert full.trainable_params > 6_000_000


def test_optimizer_slots_and_accumulators_count_trainable_params() -> None:
    adam = estimate_vram("tiny_cnn", 32, 4, optimizer="adam")
    sgd = estimate_vram("tiny_cnn", 32, 4, optimizer="sgd")
    accumulating = estimate_vram("tiny_cnn", 32, 4, optimizer="adam", accumulation_steps=2)
    n = adam.trainable_params
    assert adam.optimizer_bytes == 2 * n * 4
    assert sgd.optimizer_bytes == n * 4
    assert accumulating.optimizer_bytes == 3 * n * 4


def test_seed_settings_fit_four_gigabytes() -> None:
    for backbone, size in (("efficientnet_b1", 240), ("resnet50", 224)):
        est = estimate_vram(backbone, size, 16, mixed_precision=True, trainable="all")
        assert est.fits(FOUR_GB.usable_bytes), est.summary()


def test_efficientnet_480_batch_64_float32_does_not_fit_four_gigabytes() -> None:
    est = estimate_vram("efficientnet_b1", 480, 64, mixed_precision=False, trainable="all")
    assert not est.fits(FOUR_GB.usable_bytes)
    assert est.total_bytes > 4 * 1024**3


def test_profile_is_cached_per_backbone_and_size() -> None:
    estimate_vram("tiny_cnn", 48, 2)
    before = backbone_profile.cache_info()
    estimate_vram("tiny_cnn", 48, 64, mixed_precision=True, trainable="head")
    after = backbone_profile.cache_info()
    assert after.hits == before.hits + 1
    assert after.misses == before.misses


def test_total_is_the_sum_of_the_terms_and_reports_are_readable() -> None:
    est = estimate_vram("tiny_cnn", 32, 4)
    d = est.to_dict()
    assert d["total_bytes"] == sum(est.breakdown().values()) == est.total_bytes
    text = est.summary()
    assert "tiny_cnn" in text and "total" in text and "activations" in text


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(backbone="vgg16"), "vgg16"),
        (dict(image_size=0), "image_size"),
        (dict(batch_size=-3), "-3"),
        (dict(trainable="some"), "some"),
        (dict(optimizer="rmsprop"), "rmsprop"),
        (dict(backbone="resnet50", image_size=20), "20"),
        (dict(image_size=8), "8"),
    ],
)
def test_bad_configurations_raise_config_error(kwargs: dict, needle: str) -> None:
    args = dict(backbone="tiny_cnn", image_size=32, batch_size=4) | kwargs
    with pytest.raises(ConfigError, match=needle):
        estimate_vram(args.pop("backbone"), args.pop("image_size"), args.pop("batch_size"), **args)
