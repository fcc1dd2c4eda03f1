"""Patient-grouped, stratified cross-validation folds inside the non-test data (``search.cv_folds``).

The folds are drawn once per study, from the split manifest, so every trial of the study
validates on the same folds and their scores compare. The test split is left untouched: its
rows get fold 0. A group (the group column, else the DICOM PatientID's salted hash, see
:func:`clot_hpo.data.prepare.group_by_patient`) never spans two folds; rows without a group
are their own group. Like :mod:`clot_hpo.data.split`, the result depends only on the seed and
the rows' content (rows are put in ``relpath`` order first).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clot_hpo.errors import DataError

TEST_FOLD = 0
"""The fold number of the test split's rows: no fold, never trained or validated on."""


def _group_keys(data: pd.DataFrame) -> np.ndarray:
    """Each row's group, a row without one being its own (as in the train/val/test split)."""
    if "group" not in data:
        return np.array([f"\0row:{rel}" for rel in data["relpath"]], dtype=object)
    return np.array(
        [
            str(g) if pd.notna(g) and str(g) else f"\0row:{rel}"
            for g, rel in zip(data["group"], data["relpath"], strict=True)
        ],
        dtype=object,
    )


def assign_folds(
    manifest: pd.DataFrame,
    k: int,
    *,
    seed: int,
    class_names: dict[int, str] | None = None,
    group_name: str = "group",
) -> np.ndarray:
    """Fold numbers 1..k for the manifest's non-test rows (0 for test rows), in its row order.

    scikit-learn's ``StratifiedGroupKFold`` (shuffled, seeded): whole groups per fold, each
    fold's class balance as close to the whole's as the groups allow.

    Args:
        manifest: the split manifest: ``relpath``, ``label`` (0/1), ``split`` and ``group``
            (optional; str or empty).
        k: the number of folds (``search.cv_folds``), at least 2.
        seed: the folds' seed (the study's).
        class_names: label value to the name used in messages.
        group_name: the group column's name in the user's data (for messages).

    Raises:
        DataError: k < 2, or too few groups of a class for every fold to validate on both
            classes; the message states the rule and the counts.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    names = class_names or {1: "positive", 0: "negative"}
    if k < 2:
        raise DataError(f"search.cv_folds must be at least 2 (null turns folds off), but got {k}")
    folds = np.full(len(manifest), TEST_FOLD, dtype=np.int64)
    pool = np.flatnonzero(manifest["split"].to_numpy(dtype=str) != "test")
    order = pool[np.argsort(manifest["relpath"].to_numpy(dtype=str)[pool], kind="stable")]
    data = manifest.iloc[order]
    labels = data["label"].to_numpy(dtype=int)
    groups = _group_keys(data)
    groups_with = {c: len(set(groups[labels == c])) for c in (1, 0)}
    if min(groups_with.values()) < k:
        got = ", ".join(f"{names[c]!r} in {groups_with[c]}" for c in (1, 0))
        raise DataError(
            f"search.cv_folds={k}: every fold validates on both classes and a patient ({group_name!r}) "
            f"never spans two folds, so each class must appear in at least {k} groups outside the "
            f"test split, but got {got}; lower search.cv_folds or add data"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for number, (_, held_out) in enumerate(splitter.split(np.zeros(len(data)), labels, groups), start=1):
        folds[order[held_out]] = number
    for number in range(1, k + 1):
        missing = [names[c] for c in (1, 0) if not ((folds[order] == number) & (labels == c)).any()]
        if missing:
            raise DataError(
                f"search.cv_folds={k}: fold {number} got no {' or '.join(map(repr, missing))} images "
                f"(whole groups of {group_name!r} go to one fold); lower search.cv_folds or add groups"
            )
    return folds
