"""Cross-validation folds: grouped by patient, stratified, inside the non-test data, seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clot_hpo.data.folds import TEST_FOLD, assign_folds
from clot_hpo.errors import DataError


def _manifest(n_patients: int = 20, per_patient: int = 3, test_patients: int = 4) -> pd.DataFrame:
    """Patients of one class each (even: positive), the first ``test_patients`` in the test split."""
    rows = []
    for p in range(n_patients):
        for i in range(per_patient):
            rows.append(
                {
                    "relpath": f"p{p:02d}/img{i}.png",
                    "label": p % 2,
                    "group": f"patient{p:02d}",
                    "split": "test" if p < test_patients else ("val" if p % 5 == 4 else "train"),
                }
            )
    return pd.DataFrame(rows)


def test_each_patient_lands_in_one_fold_and_the_test_split_in_none() -> None:
    frame = _manifest()
    folds = assign_folds(frame, 4, seed=3)
    assert (folds[frame["split"] == "test"] == TEST_FOLD).all()
    pool = frame["split"] != "test"
    assert set(folds[pool]) == {1, 2, 3, 4}
    per_patient = pd.Series(folds).groupby(frame["group"]).nunique()
    assert (per_patient == 1).all()
    # Stratified: every fold validates on both classes.
    for fold in range(1, 5):
        assert set(frame["label"][folds == fold]) == {0, 1}


def test_folds_depend_on_the_seed_and_content_not_the_row_order() -> None:
    frame = _manifest()
    folds = assign_folds(frame, 4, seed=3)
    shuffled = frame.sample(frac=1.0, random_state=0)
    again = assign_folds(shuffled, 4, seed=3)
    assert (pd.Series(again, index=shuffled.index).sort_index().to_numpy() == folds).all()
    others = [assign_folds(frame, 4, seed=s) for s in range(4, 10)]
    assert any((o != folds).any() for o in others)


def test_rows_without_a_group_are_their_own_patient() -> None:
    frame = _manifest(n_patients=8, per_patient=2, test_patients=0)
    frame["group"] = None
    folds = assign_folds(frame, 4, seed=0)
    # No groups: each image on its own, 16 images over 4 folds of 4, balanced by class.
    assert sorted(np.bincount(folds)[1:]) == [4, 4, 4, 4]
    for fold in range(1, 5):
        assert sorted(frame["label"][folds == fold]) == [0, 0, 1, 1]


def test_too_few_patients_of_a_class_names_the_rule_and_the_counts() -> None:
    frame = _manifest(n_patients=10, test_patients=4)  # 3 positive and 3 negative patients left
    with pytest.raises(DataError) as info:
        assign_folds(frame, 5, seed=0, group_name="PatientID")
    message = str(info.value)
    assert "search.cv_folds=5" in message and "'PatientID'" in message
    assert "at least 5 groups" in message and "'positive' in 3, 'negative' in 3" in message


def test_fewer_than_two_folds_is_refused() -> None:
    with pytest.raises(DataError, match="at least 2 .* but got 1"):
        assign_folds(_manifest(), 1, seed=0)


def test_the_trial_manifest_carries_the_folds_and_the_pool_keys_stay_unique(tmp_path: Path) -> None:
    from clot_hpo.data.cache import DecodedSplits, unique_keys

    manifest = tmp_path / "trial_manifest.csv"
    pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png", "d.png"],
            "label": [1, 0, 1, 0],
            "split": ["train", "train", "val", "test"],
            "sha256": ["h1", "h2", "h1", "h3"],
            "fold": [1, 2, 2, 0],
        }
    ).to_csv(manifest, index=False)
    splits = DecodedSplits(manifest, image_size=8, folder=None)
    assert splits.folds("train").tolist() == [1, 2] and splits.folds("test").tolist() == [0]
    # The same picture in train and val: one key per row once the two are pooled.
    assert unique_keys(splits.hashes("train") + splits.hashes("val")) == ["h1", "h2", "h1#2"]
    pd.read_csv(manifest).drop(columns="fold").to_csv(manifest, index=False)
    with pytest.raises(DataError, match="no `fold` column"):
        DecodedSplits(manifest, image_size=8, folder=None).folds("train")
