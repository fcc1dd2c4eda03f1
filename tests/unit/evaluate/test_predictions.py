"""The predictions files every completed trial keeps: written here, read back by the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clot_hpo.evaluate.paired import read_predictions
from clot_hpo.evaluate.predictions import prediction_artifacts, predictions_csv


def test_the_csv_reads_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random(50)
    labels = rng.integers(0, 2, 50)
    keys = [f"{i:064x}" for i in range(50)]
    path = tmp_path / "test_predictions.csv"
    path.write_text(predictions_csv(keys, labels, probs))
    back = read_predictions(path)
    assert back["key"].tolist() == keys
    assert back["label"].tolist() == labels.tolist()
    assert np.array_equal(back["probability"].to_numpy(), probs), "floats round-trip bit for bit"
    assert path.read_text().splitlines()[0] == "key,label,probability"


@pytest.mark.parametrize(
    ("keys", "labels", "probs", "match"),
    [
        (["a", "b"], [0, 1], [0.1, 0.2, 0.3], "same length"),
        (["a", "b"], [0, 1, 1], [0.1, 0.2, 0.3], "2 keys and 3"),
        (["a", "a"], [0, 1], [0.1, 0.2], "unique"),
        (["a", ""], [0, 1], [0.1, 0.2], "empty"),
        (["a", "b"], [0, 2], [0.1, 0.2], "only 0 and 1"),
        (["a", "b"], [0, 1], [0.1, 1.2], r"lie in \[0, 1\]"),
    ],
)
def test_bad_rows_are_refused(keys: list[str], labels: list[int], probs: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        predictions_csv(keys, labels, probs)


def test_artifacts_per_split_and_manifest_order_is_checked() -> None:
    keys = {"val": ["v1", "v2"], "test": ["t1", "t2", "t3"]}
    scored = {"val": ([0, 1], [0.2, 0.8]), "test": ([1, 0, 1], [0.7, 0.1, 0.6])}
    files = prediction_artifacts(keys, scored, expected_labels={"val": [0, 1], "test": [1, 0, 1]})
    assert sorted(files) == ["test_predictions.csv", "val_predictions.csv"]
    assert files["test_predictions.csv"].splitlines()[1:] == ["t1,1,0.7", "t2,0,0.1", "t3,1,0.6"]
    with pytest.raises(ValueError, match="not in manifest order"):
        prediction_artifacts(keys, scored, expected_labels={"test": [0, 1, 1]})
    # A split without keys (or an unknown split) is left out, not guessed.
    assert list(prediction_artifacts({"val": ["v1", "v2"]}, scored)) == ["val_predictions.csv"]
