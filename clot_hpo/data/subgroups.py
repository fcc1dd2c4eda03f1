"""Subgroups of a study's images, from the extra columns of its metadata CSV (site, scanner, age).

The report breaks its test metrics down by these columns; reading and banding them is a data
job, so it lives here, beside the scan of the same CSV (:mod:`clot_hpo.data.scan`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from clot_hpo.config.schema import DataConfig
from clot_hpo.util import file_sha256

MAX_SUBGROUP_LEVELS = 12
AGE_BANDS = 4


def _file_sha256(path: Path) -> str:
    """The file's content hash, as the data layer keys images (sha256 of its bytes)."""
    try:
        return file_sha256(path)
    except OSError:
        return ""


def subgroup_columns(
    data: DataConfig | None, data_report: dict[str, Any], manifest: pd.DataFrame | None
) -> tuple[pd.DataFrame | None, str]:
    """The metadata CSV's extra columns, keyed by image ``sha256``; or None and why not.

    Extra columns are every column but the image, label and group columns. Numbers with more
    than :data:`MAX_SUBGROUP_LEVELS` distinct values are cut into :data:`AGE_BANDS` quantile
    bands; other columns with 2 to :data:`MAX_SUBGROUP_LEVELS` values are used as they are.
    The CSV is read from the study's data folder (``data.path`` of its config), so subgroups
    need that folder on this machine. Its rows are keyed through the tracked manifest when it
    names files (``tracking.log_manifest: full``), else by hashing each listed file, since
    by default tracking keeps only keys.
    """
    root = Path(str(data_report.get("data_path") or (data.path if data is not None else "")))
    data = data or DataConfig()  # the schema's column names when no config was recorded
    csv_path = Path(data.metadata_csv or "metadata.csv")
    csv_path = csv_path if csv_path.is_absolute() else root / csv_path
    if data_report.get("layout", "metadata") != "metadata" or not csv_path.is_file():
        return None, "the data has no metadata CSV here (class folders, or the data folder is elsewhere)"
    table = pd.read_csv(
        csv_path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig"
    )
    table.columns = [str(c).strip() for c in table.columns]
    image, label = data.image_column or "image", data.label_column or "label"
    used = {image, label, data.group_column or "group"}
    extra = [c for c in table.columns if c not in used]
    if image not in table.columns or not extra:
        return None, f"the metadata CSV ({csv_path.name}) has no columns besides image, label and group"
    columns: dict[str, pd.Series] = {}
    for name in extra:
        values = table[name].str.strip()
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all() and numbers.nunique() > MAX_SUBGROUP_LEVELS:
            bands = pd.qcut(numbers, AGE_BANDS, duplicates="drop")
            values = bands.map(lambda iv: f"{iv.left:g}–{iv.right:g}").astype(str)
        if 2 <= values.nunique() <= MAX_SUBGROUP_LEVELS:
            columns[name] = values
    if not columns:
        return None, "the metadata CSV's extra columns have a single value or too many to form subgroups"
    resolved_root = root.resolve()
    files = [(p if p.is_absolute() else root / p).resolve() for p in (Path(v.strip()) for v in table[image])]
    if manifest is not None and {"relpath", "sha256"} <= set(manifest.columns):
        key_of = dict(zip(manifest["relpath"], manifest["sha256"], strict=False))

        def relpath(path: Path) -> str:
            try:
                return path.relative_to(resolved_root).as_posix()
            except ValueError:
                return path.as_posix()

        keys = [key_of.get(relpath(f), "") for f in files]
    else:
        keys = [_file_sha256(f) for f in files]
    keyed = pd.DataFrame({"sha256": keys, **columns})
    keyed = keyed[keyed["sha256"] != ""]
    if keyed.empty:
        return None, f"none of the images in {csv_path.name} could be matched to the study's images"
    return keyed, ""


__all__ = ["AGE_BANDS", "MAX_SUBGROUP_LEVELS", "subgroup_columns"]
