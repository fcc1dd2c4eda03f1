from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from clot_hpo.errors import ConfigError
from clot_hpo.models import create_backbone, create_backbone_with_info, list_backbones


def test_list_backbones_names_the_products_backbones() -> None:
    assert list_backbones() == ["efficientnet_b1", "resnet50", "tiny_cnn"]


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_maps_raw_pixels_to_a_feature_map(name: str) -> None:
    model = create_backbone(name, image_size=32, weights=None)
    assert model.name == "backbone"
    out = model(np.full((2, 32, 32, 3), 255.0, dtype="float32"))
    assert out.shape[0] == 2 and len(out.shape) == 4
    assert np.isfinite(np.asarray(out)).all()


def test_resnet_preprocessing_matches_keras_preprocess_input() -> None:
    model = create_backbone("resnet50", image_size=32)
    inner = model.get_layer("resnet_preprocess")
    probe = keras.Model(model.input, inner.output)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(probe.predict(x, verbose=0), expected, atol=1e-3)
    assert not inner.trainable


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"backbone must be one of .* but got 'vgg16'"):
        create_backbone("vgg16", image_size=32)


def test_offline_imagenet_falls_back_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        # What keras.utils.get_file raises when the download host is unreachable.
        raise Exception("URL fetch failure on https://example.invalid: None -- [Errno -2]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.efficientnet.file_utils.get_file", offline)
    info = create_backbone_with_info("efficientnet_b1", image_size=32, weights="imagenet")
    assert info.weights_used.startswith("none (imagenet unavailable")
    assert "URL fetch failure" in info.weights_used
    assert "http" not in info.weights_used and "Errno" not in info.weights_used  # shown on the card


def test_missing_local_weights_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_backbone("resnet50", image_size=32, weights=str(tmp_path / "missing.h5"))


def test_local_weights_file_is_loaded(tmp_path: Path) -> None:
    source = create_backbone("efficientnet_b1", image_size=32)
    path = tmp_path / "b1_notop.weights.h5"
    source.save_weights(path)
    info = create_backbone_with_info("efficientnet_b1", image_size=32, weights=str(path))
    assert info.weights_used == str(path)
    np.testing.assert_allclose(info.model.get_weights()[5], source.get_weights()[5])
