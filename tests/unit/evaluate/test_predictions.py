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


def test_a_trials_files_come_keyed_by_its_manifest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import pandas as pd

    from clot_hpo.data.cache import DecodedSplits
    from clot_hpo.evaluate.predictions import trial_predictions

    manifest = tmp_path / "trial_manifest.csv"
    frame = pd.DataFrame(
        {
            "path": [f"/x/{i}.png" for i in range(5)],
            "label": [0, 1, 1, 0, 1],
            "split": ["val", "val", "test", "test", "test"],
            "sha256": ["v0", "v1", "t0", "t1", "t2"],
        }
    )
    frame.to_csv(manifest, index=False)
    splits = DecodedSplits(manifest, image_size=8, folder=None)
    scored = (np.array([0, 1]), np.array([0.2, 0.9]), np.array([1, 0, 1]), np.array([0.8, 0.3, 0.6]))
    files = trial_predictions(splits, scored)
    assert files["val_predictions.csv"] == "key,label,probability\nv0,0,0.2\nv1,1,0.9\n"
    assert files["test_predictions.csv"].splitlines()[1:] == ["t0,1,0.8", "t1,0,0.3", "t2,1,0.6"]
    # Rows out of manifest order, or a manifest without keys: the files are left out, said in the log.
    shuffled = (scored[0], scored[1], np.array([0, 1, 1]), scored[3])
    assert trial_predictions(splits, shuffled) == {}
    frame.drop(columns="sha256").to_csv(manifest, index=False)
    assert trial_predictions(DecodedSplits(manifest, image_size=8, folder=None), scored) == {}
    assert caplog.text.count("predictions files are left out") == 2
