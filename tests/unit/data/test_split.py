"""Deterministic stratified splits, grouped and ungrouped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clot_hpo.data.split import SPLITS, assign_splits, min_images_per_class, split_counts
from clot_hpo.errors import DataError


def _frame(n_pos: int, n_neg: int, per_group: int | None = None, seed: int = 0) -> pd.DataFrame:
    labels = [1] * n_pos + [0] * n_neg
    rng = np.random.default_rng(seed)
    rng.shuffle(labels)
    n = len(labels)
    groups = [f"g{i // per_group:04d}" for i in range(n)] if per_group else [None] * n
    return pd.DataFrame(
        {
            "path": [f"/data/{i:05d}.png" for i in range(n)],
            "relpath": [f"{i:05d}.png" for i in range(n)],
            "label": labels,
            "group": pd.Series(groups, dtype=object),
        }
    )


def _split(frame: pd.DataFrame, seed: int = 1, val: float = 0.15, test: float = 0.15) -> pd.DataFrame:
    return assign_splits(frame, val_fraction=val, test_fraction=test, seed=seed)


def test_ungrouped_split_is_stratified_with_the_requested_fractions() -> None:
    out = _split(_frame(300, 100))
    counts = split_counts(out)
    assert counts["test"] == {"positive": 45, "negative": 15}
    assert counts["val"] == {"positive": 45, "negative": 15}
    assert counts["train"] == {"positive": 210, "negative": 70}
    assert out.attrs["grouped_split"] is False


def test_same_seed_same_split_different_seed_different_split() -> None:
    frame = _frame(60, 60)
    a, b, c = _split(frame, seed=7), _split(frame, seed=7), _split(frame, seed=8)
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()


def test_split_does_not_depend_on_row_order() -> None:
    frame = _frame(40, 40, per_group=4)
    shuffled = frame.sample(frac=1.0, random_state=3)
    for grouped in (False, True):
        f = frame if grouped else frame.assign(group=None)
        s = shuffled if grouped else shuffled.assign(group=None)
        a = _split(f).set_index("relpath")["split"]
        b = _split(s).set_index("relpath")["split"]
        assert a.sort_index().tolist() == b.sort_index().tolist()
        # ...and the result keeps the caller's row order.
        assert _split(s)["relpath"].tolist() == s["relpath"].tolist()


@pytest.mark.parametrize("per_group", [2, 3, 5])
def test_grouped_split_keeps_every_group_in_one_split(per_group: int) -> None:
    frame = _frame(150, 150, per_group=per_group, seed=per_group)
    out = _split(frame, seed=11)
    assert out.attrs["grouped_split"] is True
    assert (out.groupby("group")["split"].nunique() == 1).all()
    sizes = out["split"].value_counts(normalize=True)
    assert abs(sizes["test"] - 0.15) < 0.03 and abs(sizes["val"] - 0.15) < 0.03
    for split in SPLITS:
        part = out[out["split"] == split]
        assert 0.4 < part["label"].mean() < 0.6  # stratified as far as groups allow


def test_grouped_split_differs_from_ungrouped_and_keeps_determinism() -> None:
    frame = _frame(80, 80, per_group=4)
    grouped = _split(frame, seed=5)
    assert grouped["split"].tolist() == _split(frame, seed=5)["split"].tolist()
    assert grouped["split"].tolist() != _split(frame, seed=6)["split"].tolist()
    ungrouped = _split(frame.assign(group=None), seed=5)
    crossing = ungrouped.groupby(frame["group"])["split"].nunique()
    assert (crossing > 1).any()  # so grouping really changes something


def test_rows_without_group_are_their_own_group() -> None:
    frame = _frame(30, 30, per_group=3)
    frame.loc[frame.index[:9], "group"] = None
    out = _split(frame)
    grouped_rows = out[out["group"].notna()]
    assert (grouped_rows.groupby("group")["split"].nunique() == 1).all()


def test_too_few_images_states_rule_and_counts() -> None:
    assert min_images_per_class(0.15, 0.15) == 7
    with pytest.raises(DataError) as info:
        _split(_frame(3, 20))
    message = str(info.value)
    assert "every split needs at least one image of each class" in message
    assert "at least 7 images" in message and "positive: 3" in message and "negative: 20" in message


def test_too_few_groups_states_rule_and_counts() -> None:
    frame = _frame(10, 10)
    frame["group"] = ["a" if label else f"n{i}" for i, label in enumerate(frame["label"])]
    with pytest.raises(DataError, match=r"at least 3 groups, but 1 group\(s\) contain 'positive' images"):
        _split(frame)


def test_fractions_are_checked() -> None:
    with pytest.raises(DataError, match="val_fraction \\+ test_fraction < 1"):
        _split(_frame(20, 20), val=0.6, test=0.5)
