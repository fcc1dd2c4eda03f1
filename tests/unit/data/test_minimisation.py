"""Issue 12, item 7: what may leave the machine of a split manifest and a data report.

``prepare_data`` keeps the full manifest and report in the study's own folder (the user's
disk) and writes, beside them in ``shared/``, the versions MLflow gets by default: content
hashes as keys, labels, splits and counts; no file name, path or group id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from clot_hpo.config import DataConfig
from clot_hpo.data.prepare import prepare_data


def _identifiers(root: Path, full: pd.DataFrame) -> list[str]:
    """Every string that names a file, a folder or a patient in the dataset."""
    names = [Path(rel).name for rel in full["relpath"]] + list(full["relpath"])
    return names + [str(g) for g in full["group"].dropna().unique()] + [str(root.resolve())]


def test_the_shared_manifest_and_report_carry_no_names_or_groups(
    tmp_path: Path, metadata_dataset, save, pixels
) -> None:
    root = metadata_dataset(tmp_path / "patients_of_dr_who", 10, 10, per_group=2)
    # Every cross-split pair counts as a near duplicate (distance <= 64) and one file is skipped:
    # the local report lists them all by name.
    bad = root / "img" / "pos_003.png"
    bad.write_bytes(bad.read_bytes()[:-50])
    prepared = prepare_data(
        DataConfig(path=str(root), skip_corrupt=True, near_duplicate_max_distance=64),
        seed=0,
        out_dir=tmp_path / "study" / "data",
    )
    full = pd.read_csv(prepared.manifest_path)
    assert {"relpath", "group"} <= set(full.columns)  # the local copy keeps everything

    shared = prepared.tracked_manifest("keys")
    assert shared != prepared.manifest_path and shared.parent.name == "shared"
    keys = pd.read_csv(shared)
    assert list(keys.columns) == ["key", "label", "split"]
    assert keys["key"].tolist() == full["sha256"].tolist()
    assert keys[["label", "split"]].equals(full[["label", "split"]])

    report_text = (shared.parent / "data_report.json").read_text()
    report = json.loads(report_text)
    assert report["digest"] == prepared.digest and report["counts"] == prepared.counts
    assert report["skipped"] == [{"reason": prepared.skipped[0][1]}]
    assert report["leakage"]["n_near"] > 0 and report["leakage"]["near_pairs"][0]["key_a"] in set(keys["key"])
    text = shared.read_text() + report_text
    leaked = [name for name in _identifiers(root, prepared.manifest) if name in text]
    assert leaked == [], leaked
    assert "pos_003" not in text and "patients_of_dr_who" not in text


def test_full_opts_in_to_the_manifest_with_names(tmp_path: Path, metadata_dataset) -> None:
    root = metadata_dataset(tmp_path / "d", 10, 10)
    prepared = prepare_data(DataConfig(path=str(root)), seed=0, out_dir=tmp_path / "out")
    assert prepared.tracked_manifest("full") == prepared.manifest_path
