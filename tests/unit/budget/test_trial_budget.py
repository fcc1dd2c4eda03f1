"""A trial plans its VRAM from the model it built: once, and for the weights the backbone really got."""

from __future__ import annotations

from pathlib import Path

import keras
import keras_tuner
import pytest

from clot_hpo.budget import (
    VramBudget,
    backbone_profile,
    estimate_vram,
    plan_budget,
    planned_trainable,
    profile_model,
)
from clot_hpo.config import ExperimentConfig
from clot_hpo.models.hypermodel import ClotHyperModel, set_trainable_fraction
from clot_hpo.search_space import load_search_space


def _space(tmp_path: Path, backbone: str, unfreeze_fraction: float) -> object:
    path = tmp_path / f"{backbone}.yaml"
    path.write_text(
        f"backbone: {backbone}\nparameters:\n"
        "  image_size: {type: fixed, value: 32}\n  batch_size: {type: fixed, value: 8}\n"
        f"  unfreeze_fraction: {{type: fixed, value: {unfreeze_fraction}}}\n"
        "  freeze_epochs: {type: fixed, value: 0}\n"
    )
    return load_search_space(path)


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        # What keras.utils.get_file raises when the download host is unreachable.
        raise Exception("URL fetch failure on https://example.invalid: None -- [Errno -2]")

    monkeypatch.setattr(keras.utils, "get_file", fail)
    monkeypatch.setattr("keras.src.applications.efficientnet.file_utils.get_file", fail)


def test_offline_imagenet_fallback_plans_training_the_whole_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ImageNet weights asked for, base frozen all trial; offline the base is random and trains whole.

    Before the fix the plan read the config (``weights: imagenet``) and planned head-only
    training: an estimate too low in exactly the case where the whole backbone trains.
    """
    _offline(monkeypatch)
    config = ExperimentConfig.model_validate({"training": {"weights": "imagenet"}, "budget": {"vram_gb": 4}})
    hypermodel = ClotHyperModel(
        {"efficientnet_b1": _space(tmp_path, "efficientnet_b1", 0.0)}, weights="imagenet"
    )
    hp = keras_tuner.HyperParameters()
    settings = hypermodel.settings(hp)
    model = hypermodel.build(hp)
    assert not hypermodel.pretrained, hypermodel.weights_used
    decision, trainable = plan_budget(
        config, hypermodel, settings, model, budget=VramBudget.from_gb(4), epochs=2, mixed_precision=False
    )
    assert trainable == "all"
    whole = estimate_vram("efficientnet_b1", 32, 8, trainable="all")
    assert decision.requested_estimate_bytes == whole.total_bytes
    assert whole.total_bytes > estimate_vram("efficientnet_b1", 32, 8, trainable="head").total_bytes


@pytest.mark.parametrize(
    ("pretrained", "fraction", "freeze", "epochs", "expected"),
    [
        (False, 0.0, 0, 3, "all"),  # random weights: the whole base trains, whatever was asked
        (False, 0.5, 5, 3, "all"),
        (True, 0.0, 0, 3, "head"),  # pretrained and never unfrozen
        (True, 0.5, 5, 3, "head"),  # frozen for longer than the trial lasts
        (True, 0.5, 1, 3, "all"),  # unfrozen after one epoch
    ],
)
def test_planned_trainable(
    pretrained: bool, fraction: float, freeze: int, epochs: int, expected: str
) -> None:
    assert (
        planned_trainable(
            pretrained=pretrained, unfreeze_fraction=fraction, freeze_epochs=freeze, epochs=epochs
        )
        == expected
    )


@pytest.mark.parametrize("backbone", ["tiny_cnn", "resnet50"])
def test_the_built_models_profile_is_the_estimators_own(backbone: str, tmp_path: Path) -> None:
    """Profiling the trial's (frozen) backbone gives what building a fresh one gives; flags survive."""
    hypermodel = ClotHyperModel({backbone: _space(tmp_path, backbone, 1.0)}, weights="none")
    model = hypermodel.build(keras_tuner.HyperParameters())
    base = model.get_layer("backbone")
    set_trainable_fraction(model, 0.5)
    flags = [layer.trainable for layer in base._flatten_layers()]
    trainable_now = len(base.trainable_weights)
    profile = profile_model(base, backbone=backbone, image_size=32)
    assert [layer.trainable for layer in base._flatten_layers()] == flags, "the model's flags were put back"
    assert len(base.trainable_weights) == trainable_now
    fresh = backbone_profile(backbone, 32)
    assert profile.total_params == fresh.total_params
    assert profile.activation_elements == fresh.activation_elements
    assert profile.layer_calls == fresh.layer_calls
    # ResNet50's preprocessing conv is frozen by construction (12 parameters): the estimate of a
    # trained base counts it, which errs on the safe side.
    assert 0 <= profile.trainable_params - fresh.trainable_params <= 12
