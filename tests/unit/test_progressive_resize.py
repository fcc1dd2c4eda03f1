"""Progressive resizing: each epoch at its schedule's side, and a resumed trial continues on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from clot_hpo.checkpoint_file import CHECKPOINT_FILE, TrainingCheckpoint, epoch_checkpoint, load_checkpoint
from clot_hpo.data.pipeline import EpochOrder, make_array_dataset
from clot_hpo.models.hypermodel import ClotHyperModel
from clot_hpo.search_space import load_search_space
from clot_hpo.train import format_epoch, progressive_sides, train

SEED = 11
ATOL = 1e-5  # as in test_checkpoint: CPU float32 replays the same kernels
SIDES = progressive_sides(32, 4, start_fraction=0.5, full_size_epoch=4, multiple=4)


def test_the_side_grows_linearly_to_full_size_at_the_given_epoch() -> None:
    assert SIDES == [16, 20, 24, 32]
    assert progressive_sides(240, 6, start_fraction=0.5, full_size_epoch=3) == [120, 176, 240, 240, 240, 240]
    # Full size is reached by the last epoch at the latest: a trial is valued at full size.
    assert progressive_sides(64, 2, start_fraction=0.25, full_size_epoch=5) == [16, 64]
    assert progressive_sides(64, 3, start_fraction=1.0, full_size_epoch=3) == [64, 64, 64]
    assert progressive_sides(48, 3, start_fraction=0.1, full_size_epoch=3, min_side=32) == [32, 32, 48]
    with pytest.raises(ValueError, match="start_fraction"):
        progressive_sides(64, 3, start_fraction=0.0, full_size_epoch=2)


def test_the_epoch_line_names_the_side_only_when_given() -> None:
    logs = {"loss": 0.5, "val_auc": 0.75}
    assert "· 24px ·" in format_epoch(3, 1, 4, logs, 1.0, 24)
    assert "px" not in format_epoch(3, 1, 4, logs, 1.0)


def _images(n: int = 24, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype("float32")
    images = rng.integers(0, 256, (n, size, size, 3)).astype("uint8")
    images[labels == 1, 8:24, 8:24, 0] = 255  # something to learn
    return images, labels


def _probe(ds: Any, seen: list[int]) -> Any:
    """``ds`` unchanged, recording the side of every batch that passes."""

    def record(x: np.ndarray) -> np.int32:
        seen.append(int(x.shape[1]))
        return np.int32(0)

    def tap(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        done = tf.numpy_function(record, [x], tf.int32)
        with tf.control_dependencies([done]):
            return tf.identity(x), y

    return ds.map(tap)


def _fit(
    tmp_path: Path, folder: Path, *, epochs: int, initial: int = 0, resume: TrainingCheckpoint | None = None
) -> tuple[keras.Model, list[int], list[int]]:
    """What a trial process does: a fresh model and order, the checkpoint callback, ``train``."""
    space_file = tmp_path / "tiny_cnn.yaml"
    space_file.write_text(
        "backbone: tiny_cnn\nparameters:\n"
        "  image_size: {type: fixed, value: 32}\n"
        "  dropout: {type: fixed, value: 0.2}\n"
        "  optimizer: {type: fixed, value: adam}\n"
    )
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    hypermodel = ClotHyperModel({"tiny_cnn": load_search_space(space_file)}, weights="none", seed=SEED)
    hypermodel.variable_input_size = True
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    images, labels = _images()
    order = EpochOrder(len(images), SEED, batch_size=8, sides=SIDES)
    trained: list[int] = []
    validated: list[int] = []
    train_ds = _probe(
        make_array_dataset(images, labels, batch_size=8, shuffle=True, seed=SEED, order=order), trained
    )
    val_ds = _probe(
        make_array_dataset(images[:8], labels[:8], batch_size=8, shuffle=False, seed=SEED, sides_from=order),
        validated,
    )
    callback = epoch_checkpoint(folder / CHECKPOINT_FILE, resume=resume, order=order, meta={"sides": SIDES})
    train(hypermodel, hp, model, train_ds, val_ds, epochs=epochs, initial_epoch=initial, callbacks=[callback])
    return model, trained, validated


def test_a_resumed_trial_continues_at_its_schedules_size(tmp_path: Path) -> None:
    straight, straight_trained, straight_validated = _fit(tmp_path, tmp_path / "straight", epochs=4)
    assert straight_trained == [16] * 3 + [20] * 3 + [24] * 3 + [32] * 3  # 3 batches an epoch
    assert straight_validated == SIDES  # validation follows the epoch's side

    _, first_trained, _ = _fit(tmp_path, tmp_path / "killed", epochs=2)  # killed after epoch 2
    assert first_trained == [16] * 3 + [20] * 3
    checkpoint = load_checkpoint(tmp_path / "killed" / CHECKPOINT_FILE)
    assert checkpoint is not None and checkpoint.epoch == 2 and checkpoint.meta["sides"] == SIDES

    resumed, resumed_trained, resumed_validated = _fit(
        tmp_path, tmp_path / "killed", epochs=4, initial=2, resume=checkpoint
    )
    # Epoch 3 at epoch 3's side (24), not at the first epoch's (16) nor at full size.
    assert resumed_trained == [24] * 3 + [32] * 3
    assert resumed_validated == [24, 32]
    for a, b in zip(straight.variables, resumed.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, err_msg=a.path)


def test_a_reduced_pass_is_the_stored_image_resized() -> None:
    images, labels = _images(n=4)
    order = EpochOrder(4, SEED, batch_size=4, sides=[16, 32])
    ds = make_array_dataset(images, labels, batch_size=4, shuffle=False, seed=SEED, sides_from=order)
    small = next(iter(ds))[0].numpy()
    expected = tf.image.resize(images.astype("float32"), [16, 16], method="bilinear", antialias=True)
    np.testing.assert_allclose(small, expected.numpy(), atol=1e-3)
    order.epoch = 1
    full = next(iter(ds))[0].numpy()
    np.testing.assert_array_equal(full, images.astype("float32"))  # at the stored side: untouched
    order.epoch = 7  # past the schedule: its last side
    assert next(iter(ds))[0].shape[1] == 32


def test_sides_must_be_positive() -> None:
    with pytest.raises(ValueError, match="sides"):
        EpochOrder(4, SEED, batch_size=2, sides=[])


def test_the_saved_and_explained_model_has_the_full_side(tmp_path: Path) -> None:
    """A model trained at several sides is saved and explained at its image_size, same weights."""
    from clot_hpo.explain.gradcam import GradCam
    from clot_hpo.train import fixed_size, inference_copy

    model, _, _ = _fit(tmp_path, tmp_path / "run", epochs=1)
    assert model.input_shape == (None, None, None, 3)
    saved = inference_copy(model, 32)
    assert saved.input_shape == (None, 32, 32, 3)
    images = _images(n=4)[0].astype("float32")
    expected = model(images, training=False)
    np.testing.assert_allclose(saved(images, training=False), expected, atol=1e-6)
    path = tmp_path / "model.keras"
    saved.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded(images, training=False), expected, atol=1e-6)
    probabilities, maps = GradCam(fixed_size(model, 32), compiled=False)(images)
    assert probabilities.shape == (4,) and maps.shape[0] == 4
    assert fixed_size(saved, 48) is saved  # a fixed-size model stays as it is
