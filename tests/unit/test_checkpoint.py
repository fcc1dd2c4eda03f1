"""Per-epoch checkpoints: a trial trained 1 epoch, killed and resumed for 2 equals 3 epochs in one go."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from clot_hpo.checkpoint_file import (
    CHECKPOINT_FILE,
    TrainingCheckpoint,
    epoch_checkpoint,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from clot_hpo.data.pipeline import EpochOrder, make_array_dataset
from clot_hpo.models.hypermodel import ClotHyperModel
from clot_hpo.search_space import load_search_space

SEED = 7
# Float32 training on CPU replays the same kernels on the same inputs: the resumed run's
# weights differ from the uninterrupted run's only by the reduction order oneDNN picks,
# which stays far below 1e-5 for three epochs of the tiny CNN (measured: 0 to ~1e-7).
ATOL = 1e-5


def _images(n: int = 24, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype("float32")
    images = rng.integers(0, 256, (n, size, size, 3)).astype("uint8")
    images[labels == 1, 8:24, 8:24, 0] = 255  # something to learn
    return images, labels


def _model_and_data(
    tmp_path: Path, weights: str = "none", freeze_epochs: int = 0
) -> tuple[ClotHyperModel, Any, keras.Model, EpochOrder, Any]:
    space_file = tmp_path / "tiny_cnn.yaml"
    space_file.write_text(
        "backbone: tiny_cnn\nparameters:\n"
        "  image_size: {type: categorical, choices: [32]}\n"
        "  dropout: {type: float, low: 0.3, high: 0.3}\n"
        "  optimizer: {type: categorical, choices: [adam]}\n"
        f"  freeze_epochs: {{type: fixed, value: {freeze_epochs}}}\n"
        "  unfreeze_fraction: {type: fixed, value: 1.0}\n"
    )
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    hypermodel = ClotHyperModel({"tiny_cnn": load_search_space(space_file)}, weights=weights, seed=SEED)
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    images, labels = _images()
    order = EpochOrder(len(images), SEED, batch_size=8)
    train = make_array_dataset(images, labels, batch_size=8, shuffle=True, seed=SEED, order=order)
    return hypermodel, hp, model, order, train


def _fit(
    tmp_path: Path,
    folder: Path,
    *,
    epochs: int,
    initial: int = 0,
    resume: TrainingCheckpoint | None = None,
    **model: Any,
) -> tuple[keras.Model, Any]:
    hypermodel, hp, keras_model, order, train = _model_and_data(tmp_path, **model)
    callback = epoch_checkpoint(folder / CHECKPOINT_FILE, resume=resume, order=order, meta={"trial": 0})
    hypermodel.fit(
        hp, keras_model, train, epochs=epochs, initial_epoch=initial, callbacks=[callback], verbose=0
    )
    return keras_model, callback


def test_one_epoch_then_two_resumed_equals_three_in_one_go(tmp_path: Path) -> None:
    straight, straight_cb = _fit(tmp_path, tmp_path / "straight", epochs=3)

    _fit(tmp_path, tmp_path / "killed", epochs=1)  # "killed" after its first checkpoint
    checkpoint = load_checkpoint(tmp_path / "killed" / CHECKPOINT_FILE)
    assert checkpoint is not None and checkpoint.epoch == 1
    assert checkpoint.meta == {"trial": 0}
    resumed, resumed_cb = _fit(tmp_path, tmp_path / "killed", epochs=3, initial=1, resume=checkpoint)

    assert resumed_cb.optimizer_restored is True
    assert (
        int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 9
    )  # 3 epochs x 3 batches
    for a, b in zip(straight.variables, resumed.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, err_msg=a.path)
    # One history over all three epochs, the restored epoch first.
    assert len(resumed_cb.history["loss"]) == 3
    np.testing.assert_allclose(resumed_cb.history["loss"], straight_cb.history["loss"], atol=ATOL)
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT_FILE).epoch == 3  # type: ignore[union-attr]


def test_without_the_optimizer_state_the_resumed_run_differs(tmp_path: Path) -> None:
    """The comparison above can fail: dropping the Adam moments changes the weights."""
    straight, _ = _fit(tmp_path, tmp_path / "straight", epochs=2)
    _fit(tmp_path, tmp_path / "killed", epochs=1)
    checkpoint = load_checkpoint(tmp_path / "killed" / CHECKPOINT_FILE)
    assert checkpoint is not None
    checkpoint.optimizer = []
    resumed, _ = _fit(tmp_path, tmp_path / "killed", epochs=2, initial=1, resume=checkpoint)
    differences = [
        np.max(np.abs(np.asarray(a) - np.asarray(b)))
        for a, b in zip(straight.variables, resumed.variables, strict=True)
    ]
    assert max(differences) > 100 * ATOL


def test_resume_follows_the_freeze_schedule(tmp_path: Path) -> None:
    """Base frozen for epoch 1, then unfrozen (a recompile: a fresh optimizer), as uninterrupted."""
    from clot_hpo.models import create_backbone

    weights = tmp_path / "tiny.weights.h5"
    create_backbone("tiny_cnn", image_size=32).save_weights(weights)  # stands in for pretrained
    model = {"weights": str(weights), "freeze_epochs": 1}
    straight, _ = _fit(tmp_path, tmp_path / "straight", epochs=3, **model)
    # Killed after the frozen epoch (the optimizer's state was the head's) and after the first
    # unfrozen one (the whole model's).
    for killed_after, restored in ((1, False), (2, True)):
        folder = tmp_path / f"killed-{killed_after}"
        _fit(tmp_path, folder, epochs=killed_after, **model)
        checkpoint = load_checkpoint(folder / CHECKPOINT_FILE)
        assert checkpoint is not None and checkpoint.epoch == killed_after
        resumed, callback = _fit(tmp_path, folder, epochs=3, initial=killed_after, resume=checkpoint, **model)
        assert callback.optimizer_restored is restored
        assert resumed.get_layer("backbone").trainable
        for a, b in zip(straight.variables, resumed.variables, strict=True):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), atol=ATOL, err_msg=f"{killed_after}: {a.path}"
            )


def test_each_epoch_order_depends_on_seed_and_epoch_only() -> None:
    order = EpochOrder(10, seed=3, batch_size=4)
    order.epoch = 2
    first = np.concatenate(list(order.batches()))
    again = EpochOrder(10, seed=3, batch_size=4)
    again.epoch = 2
    assert np.array_equal(first, np.concatenate(list(again.batches())))
    assert sorted(first.tolist()) == list(range(10))
    order.epoch = 3
    assert not np.array_equal(first, np.concatenate(list(order.batches())))
    assert [len(b) for b in order.batches()] == [4, 4, 2]


def test_writes_are_atomic_and_only_the_last_is_kept(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    for epoch in (1, 2):
        save_checkpoint(
            path,
            TrainingCheckpoint(
                epoch=epoch, model=[np.ones(3) * epoch], optimizer=[], history={"loss": [1.0] * epoch}
            ),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]
    header = read_header(path)
    assert header is not None and header["epoch"] == 2 and header["history"] == {"loss": [1.0, 1.0]}
    loaded = load_checkpoint(path)
    assert loaded is not None and loaded.epoch == 2 and loaded.model[0].tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("content", [b"", b"not a zip file", None])
def test_an_unreadable_checkpoint_is_one_line_and_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None
) -> None:
    path = tmp_path / CHECKPOINT_FILE
    if content is None:  # a valid one cut in half, as a full disk would leave it
        save_checkpoint(path, TrainingCheckpoint(epoch=1, model=[np.zeros(1000)], optimizer=[]))
        content = path.read_bytes()[:500]
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="clot_hpo.checkpoint_file"):
        assert load_checkpoint(path) is None
    assert len(caplog.records) == 1
    assert (
        "starting from scratch" in caplog.records[0].getMessage()
        and str(path) in caplog.records[0].getMessage()
    )
    assert load_checkpoint(tmp_path / "missing.npz") is None
