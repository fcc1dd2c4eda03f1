"""Deterministic stratified train/val/test splits, grouped when the data has groups.

The split depends only on the seed and the dataset's content (rows are put in ``relpath``
order first), never on the order in which the file system listed the files.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clot_hpo.errors import DataError

SPLITS = ("train", "val", "test")


def _class_names(names: dict[int, str] | None) -> dict[int, str]:
    return names or {1: "positive", 0: "negative"}


def min_images_per_class(val_fraction: float, test_fraction: float) -> int:
    """Fewest images a class needs so that every split can hold one of them."""
    smallest = min(val_fraction, test_fraction, 1.0 - val_fraction - test_fraction)
    return max(3, math.ceil(1.0 / smallest - 1e-9))


def assign_splits(
    frame: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    class_names: dict[int, str] | None = None,
    group_name: str = "group",
) -> pd.DataFrame:
    """Add a ``split`` column (``train``/``val``/``test``) to a copy of ``frame``.

    Stratified by ``label``. When ``frame["group"]`` holds any value the split is grouped:
    all images of a group land in the same split (rows without a group are their own group).

    Args:
        frame: rows with ``relpath``, ``label`` (0/1) and ``group``.
        val_fraction: share of images for validation.
        test_fraction: share of images for the test split.
        seed: the split's random seed.
        class_names: label value to the name used in messages.
        group_name: the group column's name in the user's data (for messages).

    Raises:
        DataError: too few images (or groups) for every split to get each class; the message
            states the rule and the counts.
    """
    names = _class_names(class_names)
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            "`0 < val_fraction`, `0 < test_fraction` and `val_fraction + test_fraction < 1` "
            f"must hold, but got val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    order = np.argsort(frame["relpath"].to_numpy(dtype=str), kind="stable")
    data = frame.iloc[order].reset_index(drop=True)
    labels = data["label"].to_numpy(dtype=int)

    need = min_images_per_class(val_fraction, test_fraction)
    counts = {int(c): int((labels == c).sum()) for c in (1, 0)}
    short = {c: n for c, n in counts.items() if n < need}
    if short:
        got = ", ".join(f"{names[c]}: {counts[c]}" for c in (1, 0))
        raise DataError(
            "too few images for a train/val/test split: every split needs at least one image "
            f"of each class, so with val_fraction={val_fraction} and test_fraction={test_fraction} "
            f"each class needs at least {need} images, but got {got}"
        )

    grouped = "group" in data and data["group"].notna().any()
    if grouped:
        split = _grouped_split(data, labels, val_fraction, test_fraction, seed, names, group_name)
    else:
        split = _stratified_split(labels, val_fraction, test_fraction, seed)
    data["split"] = split
    _check_every_split_has_each_class(data, names, grouped, group_name)
    # Back to the caller's row order.
    result = frame.copy()
    result["split"] = pd.Series(split, index=frame.index[order]).reindex(frame.index).to_numpy()
    result.attrs.update(frame.attrs)
    result.attrs["grouped_split"] = bool(grouped)
    return result


def _stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    # Imported here: scikit-learn takes seconds to import, and most commands that fail on bad
    # input do so before any split.
    from sklearn.model_selection import train_test_split

    index = np.arange(labels.size)
    # Whole numbers of images: a float share of the remainder (0.15 / 0.85) would be rounded
    # up by scikit-learn and drift by one image.
    n_test = max(2, round(test_fraction * labels.size))
    n_val = max(2, round(val_fraction * labels.size))
    rest, test = train_test_split(index, test_size=n_test, stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=seed)
    split = np.empty(labels.size, dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    return split


def _grouped_split(
    data: pd.DataFrame,
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    names: dict[int, str],
    group_name: str,
) -> np.ndarray:
    """Greedy stratified group allocation.

    scikit-learn's ``StratifiedGroupKFold`` only gives folds of 1/k of the data, so
    fractions like 0.15 would come out as 1/7; this assigns whole groups (largest first,
    ties broken by the seed) to the split whose per-class target they best fill, the same
    heuristic ``StratifiedGroupKFold`` uses, with arbitrary fractions.
    """
    groups = data["group"].astype(object).where(data["group"].notna(), None)
    keys = np.array(
        [g if g is not None else f"\0row:{rel}" for g, rel in zip(groups, data["relpath"], strict=False)],
        dtype=object,
    )
    unique, inverse = np.unique(keys.astype(str), return_inverse=True)
    n_groups = unique.size
    per_group = np.zeros((n_groups, 2))
    np.add.at(per_group, (inverse, labels), 1.0)

    groups_with = {c: int((per_group[:, c] > 0).sum()) for c in (1, 0)}
    few = {c: n for c, n in groups_with.items() if n < len(SPLITS)}
    if few:
        got = ", ".join(f"{groups_with[c]} group(s) contain {names[c]!r} images" for c in (1, 0))
        raise DataError(
            f"too few groups for a grouped train/val/test split (column {group_name!r}): no group "
            "may span two splits and every split needs each class, so each class must appear in "
            f"at least 3 groups, but {got}"
        )

    fractions = np.array([1.0 - val_fraction - test_fraction, val_fraction, test_fraction])
    totals = per_group.sum(axis=0)
    targets = fractions[:, None] * totals[None, :]
    assigned = np.zeros_like(targets)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n_groups)
    sizes = per_group.sum(axis=1)[shuffled]
    order = shuffled[np.argsort(-sizes, kind="stable")]
    scale = 1.0 / np.maximum(totals, 1.0) ** 2
    group_split = np.empty(n_groups, dtype=int)
    for g in order:
        v = per_group[g]
        # Change of the squared, class-normalised distance to the targets if g joins split s.
        delta = ((v**2 + 2 * v * (assigned - targets)) * scale).sum(axis=1)
        s = int(np.argmin(delta))
        group_split[g] = s
        assigned[s] += v
    return np.array(SPLITS, dtype=object)[group_split[inverse]]


def _check_every_split_has_each_class(
    data: pd.DataFrame, names: dict[int, str], grouped: bool, group_name: str
) -> None:
    missing = [
        f"split {s!r} got no {names[c]!r} images"
        for s in SPLITS
        for c in (1, 0)
        if not ((data["split"] == s) & (data["label"] == c)).any()
    ]
    if missing:
        how = (
            f"grouped by {group_name!r}; whole groups go to one split, so add groups, change the "
            f"fractions, or disable grouping with an empty group_column"
            if grouped
            else "add images or change the fractions"
        )
        raise DataError(
            "too few images for a train/val/test split: every split needs at least one image of "
            f"each class, but {'; '.join(missing)} ({how}; counts: {split_counts(data, names)})"
        )


def split_counts(frame: pd.DataFrame, class_names: dict[int, str] | None = None) -> dict[str, dict[str, int]]:
    """Images per split and class: ``{"train": {"positive": n, "negative": m}, ...}``."""
    names = _class_names(class_names)
    return {
        s: {names[c]: int(((frame["split"] == s) & (frame["label"] == c)).sum()) for c in (1, 0)}
        for s in SPLITS
    }
