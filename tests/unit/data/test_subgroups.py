"""Subgroups of a study's images from its metadata CSV (``data.subgroups``), for the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clot_hpo.config.schema import DataConfig
from clot_hpo.data.subgroups import AGE_BANDS, subgroup_columns
from clot_hpo.util import file_sha256


def _folder(root: Path, n: int = 20) -> Path:
    (root / "img").mkdir(parents=True)
    for i in range(n):
        (root / "img" / f"{i:02d}.png").write_bytes(f"image {i}".encode())
    pd.DataFrame(
        {
            "image": [f"img/{i:02d}.png" for i in range(n)],
            "label": ["positive", "negative"] * (n // 2),
            "group": [f"p{i // 2}" for i in range(n)],
            "site": ["north", "south"] * (n // 2),
            "age": [30 + 2 * i for i in range(n)],  # more distinct values than levels: banded
            "scanner": ["one"] * n,  # a single value: no subgroups
        }
    ).to_csv(root / "metadata.csv", index=False)
    return root


def test_extra_columns_keyed_by_each_files_hash(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    keyed, why = subgroup_columns(DataConfig(path=str(root)), {"layout": "metadata"}, None)
    assert keyed is not None and why == ""
    assert list(keyed.columns) == ["sha256", "site", "age"]
    assert keyed["sha256"].iloc[3] == file_sha256(root / "img" / "03.png")
    assert keyed["age"].nunique() == AGE_BANDS


def test_the_tracked_manifest_keys_rows_without_reading_the_images(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    manifest = pd.DataFrame({"relpath": ["img/00.png"], "sha256": ["a" * 64]})
    # data.path not recorded: the data report's folder is used.
    keyed, _ = subgroup_columns(None, {"layout": "metadata", "data_path": str(root)}, manifest)
    assert keyed is not None and list(keyed["sha256"]) == ["a" * 64]


def test_without_a_csv_here_it_says_why(tmp_path: Path) -> None:
    keyed, why = subgroup_columns(DataConfig(path=str(tmp_path / "elsewhere")), {}, None)
    assert keyed is None and "no metadata CSV here" in why
    keyed, why = subgroup_columns(DataConfig(path=str(tmp_path)), {"layout": "folders"}, None)
    assert keyed is None and "class folders" in why
