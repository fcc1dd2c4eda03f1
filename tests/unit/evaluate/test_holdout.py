"""A model applied to image files: one pass of chunks, probabilities in order, metrics on a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clot_hpo.errors import DataError
from clot_hpo.evaluate import holdout
from clot_hpo.evaluate.holdout import (
    evaluate_model,
    load_labelled_folder,
    predict_image_files,
    score_image_files,
)
from tests.support.mlflow_server import write_images


class MeanModel:
    """Keras-like: the probability of an image is its mean pixel / 255; counts its calls."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, batch: np.ndarray, batch_size: int, verbose: int) -> np.ndarray:
        self.batches.append(len(batch))
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True) / 255.0


def test_each_image_is_loaded_and_predicted_once_chunk_by_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holdout, "PREDICT_CHUNK", 2)
    paths = write_images(tmp_path, 5)
    model = MeanModel()
    chunks = list(score_image_files(model, paths, 32))
    assert [len(c) for c in chunks] == [2, 2, 1] and model.batches == [2, 2, 1]
    assert [p for c in chunks for p, _ in c] == paths
    probs = predict_image_files(MeanModel(), paths, 32)
    assert probs == [prob for c in chunks for _, prob in c] and all(0.0 <= p <= 1.0 for p in probs)


def test_metrics_of_a_model_on_a_labelled_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "positive", 4, seed=1)
    write_images(tmp_path / "negative", 4, seed=2)
    folder = load_labelled_folder(tmp_path)
    assert len(folder.paths) == 8 and sorted(folder.labels) == [0] * 4 + [1] * 4
    result = evaluate_model(MeanModel(), folder, threshold=0.5, image_size=32)
    assert result["n"] == 8 and result["threshold"] == 0.5 and result["confidence"] == 0.95
    cm: dict[str, Any] = result["confusion_matrix"]
    assert cm["tp"] + cm["fn"] == 4 and cm["tn"] + cm["fp"] == 4
    assert 0.0 <= result["metrics"]["auc"] <= 1.0


def test_an_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "positive").mkdir()
    (tmp_path / "negative").mkdir()
    with pytest.raises(DataError):
        load_labelled_folder(tmp_path)
