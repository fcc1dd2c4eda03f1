"""Issue 20, item 3: the page decodes what training decodes, and serves a model Grad-CAM cannot explain."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from PIL import Image

from clot_hpo.serve.app import create_app
from clot_hpo.serve.images import decode_image_bytes
from clot_hpo.serve.service import ModelInfo, ModelService, without_absolute_paths
from tests.support.champion import running_app


def _apng(colours: list[tuple[int, int, int]]) -> bytes:
    frames = [Image.new("RGB", (40, 40), colour) for colour in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def test_an_animated_png_gives_its_first_frame_as_training_decodes_it(tmp_path: object) -> None:
    import tensorflow as tf

    from clot_hpo.data.pipeline import decode_image

    data = _apng([(200, 10, 10), (10, 10, 200), (10, 200, 10)])
    assert Image.open(io.BytesIO(data)).n_frames == 3
    image = decode_image_bytes(data, "anim.png", 8)
    assert image.model_input.shape == (8, 8, 3)
    assert np.all(image.model_input == np.array([200, 10, 10], dtype=np.float32))  # the red first frame
    # The data layer's decoder itself: one (H, W, 3) frame, whatever the file holds.
    assert tuple(decode_image(tf.constant(data)).shape) == (40, 40, 3)


def _dense_only_model() -> object:
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Rescaling(1 / 255)(x))
    return keras.Model(inputs, outputs, name="dense_only")


def _info() -> ModelInfo:
    return ModelInfo(
        uri="models:/m/1",
        name="m",
        version="1",
        alias=None,
        run_id="r",
        backbone="dense",
        image_size=8,
        threshold=0.5,
        test_auc=None,
        test_auc_ci_low=None,
        test_auc_ci_high=None,
        trial=None,
        has_model_card=False,
    )


@pytest.fixture(scope="module")
def dense_page() -> Iterator[str]:
    service = ModelService(_dense_only_model(), _info())  # raised "Grad-CAM needs..." before
    with running_app(create_app(service)) as url:
        yield url


def test_a_model_without_a_feature_map_is_served_and_the_page_says_why_there_is_no_overlay(
    dense_page: str,
) -> None:
    reason = requests.get(f"{dense_page}/api/model", timeout=10).json()["explanations_unavailable"]
    assert reason.startswith("no Grad-CAM overlay for this model: Grad-CAM needs a 4-D feature map")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 60, 90)).save(buffer, format="PNG")
    files = [("file", ("a.png", buffer.getvalue(), "image/png"))]
    predicted = requests.post(f"{dense_page}/api/predict", files=files, timeout=30)
    assert predicted.status_code == 200 and 0 <= predicted.json()[0]["probability"] <= 1
    explained = requests.post(f"{dense_page}/api/explain", files=files, timeout=30)
    assert explained.status_code == 501 and explained.json()["detail"] == reason
    script = requests.get(f"{dense_page}/static/app.js", timeout=10).text
    assert "explanations_unavailable" in script  # the page reads the reason and shows it


def test_absolute_paths_are_cut_to_their_last_part_and_the_rest_is_kept() -> None:
    card = (
        "Data: `/home/ana/scans/clots`, file:///srv/data/x.png, C:\\Users\\ana\\scans.\n"
        "/srv/at/line/start kept as start. <script>alert(1)</script> http://host:5000/a/b models:/m@champion"
    )
    assert without_absolute_paths(card) == (
        "Data: `.../clots`, .../x.png, .../scans.\n"
        ".../start kept as start. <script>alert(1)</script> http://host:5000/a/b models:/m@champion"
    )
