from __future__ import annotations

from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest

from clot_hpo.models import create_backbone
from clot_hpo.models.hypermodel import ClotHyperModel, TrialSettings, make_optimizer
from clot_hpo.search_space import load_search_space

REPO = Path(__file__).resolve().parents[3]


def _space(tmp_path: Path, backbone: str, params: str) -> object:
    path = tmp_path / f"{backbone}.yaml"
    path.write_text(f"backbone: {backbone}\nparameters:\n{params}")
    return load_search_space(path)


def _data(n: int = 16, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (n, size, size, 3)).astype("float32"), (np.arange(n) % 2).astype("float32")


def test_builds_under_plain_keras_tuner_hyperparameters(tmp_path: Path) -> None:
    space = _space(
        tmp_path,
        "tiny_cnn",
        "  image_size: {type: categorical, choices: [32]}\n"
        "  dropout: {type: float, low: 0.1, high: 0.5}\n  use_dense: {type: bool}\n",
    )
    hp = keras_tuner.HyperParameters()
    model = ClotHyperModel({"tiny_cnn": space}, weights="none").build(hp)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 1)
    assert model.get_layer("probability").dtype_policy.name == "float32"
    assert {"dropout", "use_dense"} <= set(hp.values)


def test_two_backbones_make_backbone_a_choice_with_prefixed_conditional_params(tmp_path: Path) -> None:
    spaces = {
        "tiny_cnn": _space(tmp_path, "tiny_cnn", "  dropout: {type: float, low: 0.1, high: 0.5}\n"),
        "resnet50": _space(tmp_path, "resnet50", "  dropout: {type: float, low: 0.0, high: 0.2}\n"),
    }
    hp = keras_tuner.HyperParameters()
    settings = ClotHyperModel(spaces, weights="none").settings(hp)
    assert hp.values["backbone"] == settings.backbone
    assert f"{settings.backbone}.dropout" in hp.values
    assert settings["dropout"] == hp.values[f"{settings.backbone}.dropout"]


def test_freeze_schedule_trains_head_first_then_unfreezes(tmp_path: Path) -> None:
    space = _space(
        tmp_path,
        "tiny_cnn",
        "  image_size: {type: categorical, choices: [32]}\n"
        "  freeze_epochs: {type: int, low: 1, high: 1}\n"
        "  unfreeze_fraction: {type: float, low: 1.0, high: 1.0}\n",
    )
    weights = tmp_path / "tiny.weights.h5"
    create_backbone("tiny_cnn", image_size=32).save_weights(weights)  # stands in for pretrained
    hp = keras_tuner.HyperParameters()
    hypermodel = ClotHyperModel({"tiny_cnn": space}, weights=str(weights))
    model = hypermodel.build(hp)
    assert hypermodel.pretrained
    assert not model.get_layer("backbone").trainable
    before = [w.copy() for w in model.get_layer("backbone").get_weights()]
    x, y = _data()
    history = hypermodel.fit(hp, model, x, y, epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2
    assert model.get_layer("backbone").trainable
    after = model.get_layer("backbone").get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_randomly_initialized_base_is_never_frozen(tmp_path: Path) -> None:
    space = _space(
        tmp_path,
        "tiny_cnn",
        "  image_size: {type: categorical, choices: [32]}\n"
        "  freeze_epochs: {type: int, low: 2, high: 2}\n"
        "  unfreeze_fraction: {type: float, low: 0.0, high: 0.0}\n",
    )
    hypermodel = ClotHyperModel({"tiny_cnn": space}, weights="none")
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert not hypermodel.pretrained
    assert model.get_layer("backbone").trainable
    assert all(layer.trainable for layer in model.get_layer("backbone").layers if layer.weights)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW), ("sgd", keras.optimizers.SGD)],
)
def test_optimizers_and_gradient_accumulation(name: str, cls: type) -> None:
    s = TrialSettings(
        "tiny_cnn", {"optimizer": name, "learning_rate": 0.01, "weight_decay": 1e-4, "momentum": 0.9}
    )
    opt = make_optimizer(s, accumulation_steps=4)
    assert isinstance(opt, cls)
    assert opt.gradient_accumulation_steps == 4
    assert make_optimizer(s).gradient_accumulation_steps is None


def test_sensitivity_at_specificity_metric_only_when_the_objective_needs_it(tmp_path: Path) -> None:
    space = _space(tmp_path, "tiny_cnn", "  image_size: {type: categorical, choices: [32]}\n")
    x, y = _data()
    plain = ClotHyperModel({"tiny_cnn": space}, weights="none")
    model = plain.build(keras_tuner.HyperParameters())
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert "val_sensitivity_at_specificity" not in history.history
    tracked = ClotHyperModel({"tiny_cnn": space}, weights="none", target_specificity=0.9)
    model = tracked.build(keras_tuner.HyperParameters())
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0)
    assert 0.0 <= history.history["val_sensitivity_at_specificity"][0] <= 1.0


def _bn_cnn(inputs: keras.KerasTensor, weights: str | None) -> keras.Model:
    x = keras.layers.Conv2D(4, 3, strides=4)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize(("weights", "expected"), [("none", 0.01 ** (1 / 10)), ("local", 0.99)])
def test_random_init_batchnorm_momentum_follows_the_epoch_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: str, expected: float
) -> None:
    # With Keras' 0.99, ten steps leave 90% of the initial statistics: inference outputs of a
    # random-init base collapse. A pretrained base keeps its frozen statistics' momentum.
    from clot_hpo.models.backbones import BACKBONES, BackboneSpec

    monkeypatch.setitem(
        BACKBONES, "bn_cnn", BackboneSpec("bn_cnn", _bn_cnn, pretrained=False, preprocessing="-")
    )
    if weights == "local":
        weights = str(tmp_path / "bn.weights.h5")
        from clot_hpo.models import create_backbone as build

        build("bn_cnn", image_size=32).save_weights(weights)
    space = _space(tmp_path, "bn_cnn", "  image_size: {type: categorical, choices: [32]}\n")
    hp = keras_tuner.HyperParameters()
    hypermodel = ClotHyperModel({"bn_cnn": space}, weights=weights)
    model = hypermodel.build(hp)
    x, y = _data(n=40)
    hypermodel.fit(hp, model, x, y, batch_size=4, epochs=1, verbose=0)
    assert model.get_layer("backbone").get_layer("bn").momentum == pytest.approx(expected)


def test_class_weight_comes_from_the_config_unless_the_space_searches_it(tmp_path: Path) -> None:
    from clot_hpo.errors import ConfigError
    from clot_hpo.train import class_weights

    plain = _space(tmp_path, "tiny_cnn", "  dropout: {type: float, low: 0.1, high: 0.5}\n")
    hp = keras_tuner.HyperParameters()
    assert ClotHyperModel({"tiny_cnn": plain}, weights="none").settings(hp)["class_weight"] == "none"
    settings = ClotHyperModel({"tiny_cnn": plain}, weights="none", class_weight="balanced").settings(hp)
    assert settings["class_weight"] == "balanced" and "class_weight" not in hp.values
    searched = _space(
        tmp_path, "tiny_cnn", "  class_weight: {type: categorical, choices: [none, balanced]}\n"
    )
    hp = keras_tuner.HyperParameters()
    settings = ClotHyperModel({"tiny_cnn": searched}, weights="none", class_weight="balanced").settings(hp)
    assert hp.values["class_weight"] == settings["class_weight"] == "none"  # the space's first choice
    with pytest.raises(
        ConfigError, match=r"class_weight must be one of \['none', 'balanced'\], but got 'even'"
    ):
        ClotHyperModel({"tiny_cnn": plain}, weights="none", class_weight="even")

    # balanced: n / (2 n_class), scikit-learn's rule; each class then carries half the loss.
    labels = np.r_[np.ones(2), np.zeros(18)]
    weights = class_weights(labels, "balanced")
    assert weights == pytest.approx({0: 20 / 36, 1: 5.0})
    assert weights is not None and weights[1] * 2 == pytest.approx(weights[0] * 18)
    assert class_weights(labels, "none") is None
    with pytest.raises(ValueError, match=r"need both classes in training, but got counts \[0, 3\]"):
        class_weights(np.ones(3), "balanced")
