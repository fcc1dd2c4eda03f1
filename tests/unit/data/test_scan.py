"""Scanning both dataset layouts, and refusing bad metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from clot_hpo.config import DataConfig
from clot_hpo.data.scan import scan_dataset
from clot_hpo.errors import DataError


def test_folders_layout_lists_both_classes(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 3, 2)
    (root / "positive" / "notes.txt").write_text("not an image")
    frame = scan_dataset(DataConfig(path=str(root)))
    assert list(frame.columns) == ["path", "relpath", "label", "group"]
    assert frame.attrs["layout"] == "folders"
    assert sorted(frame["relpath"]) == list(frame["relpath"])
    assert frame["label"].tolist().count(1) == 3 and frame["label"].tolist().count(0) == 2
    assert set(frame.loc[frame.label == 1, "relpath"].str.split("/").str[0]) == {"positive"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"])
    assert frame["group"].isna().all()


def test_folder_names_are_configurable_and_searched_recursively(
    tmp_path: Path, folders_dataset, pixels, save
) -> None:
    root = folders_dataset(tmp_path / "d", 2, 2, pos_dir="clot", neg_dir="clean")
    save(root / "clot" / "sub" / "deep.JPG", pixels(99), fmt="JPEG")
    frame = scan_dataset(DataConfig(path=str(root), positive_dir="clot", negative_dir="clean"))
    assert "clot/sub/deep.JPG" in set(frame["relpath"])
    assert int(frame["label"].sum()) == 3


def test_missing_class_folder_names_it(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 2, 2, neg_dir="healthy")
    with pytest.raises(DataError, match=r"\['negative'\] not found.*healthy"):
        scan_dataset(DataConfig(path=str(root)))


def test_empty_class_folder_is_refused(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 3, 0)
    with pytest.raises(DataError, match=r"class 'negative' \(folder negative/\) has no images"):
        scan_dataset(DataConfig(path=str(root)))


def test_metadata_layout_reads_labels_and_groups(tmp_path: Path, metadata_dataset) -> None:
    root = metadata_dataset(tmp_path / "d", 4, 6, per_group=2)
    frame = scan_dataset(DataConfig(path=str(root)))
    assert frame.attrs["layout"] == "metadata"
    assert int(frame["label"].sum()) == 4 and len(frame) == 10
    assert frame["group"].nunique() == 5
    assert frame.loc[frame.relpath == "img/pos_000.png", "group"].item() == "g000"


def test_auto_layout_prefers_metadata_and_explicit_layout_wins(
    tmp_path: Path, metadata_dataset, folders_dataset
) -> None:
    root = metadata_dataset(tmp_path / "d", 3, 3)
    folders_dataset(root, 5, 5)
    assert len(scan_dataset(DataConfig(path=str(root)))) == 6
    assert len(scan_dataset(DataConfig(path=str(root), layout="folders"))) == 10


def test_metadata_columns_and_label_values_are_configurable(
    tmp_path: Path, pixels, save, metadata_csv
) -> None:
    root = tmp_path / "d"
    rows = []
    for i in range(6):
        save(root / f"x{i}.png", pixels(i))
        rows.append((f"x{i}.png", "1" if i % 2 else "0", f"patient{i // 2}"))
    metadata_csv(root / "labels.csv", rows, header=("file", "clot", "patient"))
    cfg = DataConfig(
        path=str(root),
        metadata_csv="labels.csv",
        image_column="file",
        label_column="clot",
        group_column="patient",
        positive_label="1",
        negative_label="0",
    )
    frame = scan_dataset(cfg)
    assert frame["label"].tolist() == [0, 1, 0, 1, 0, 1]
    assert frame["group"].tolist() == ["patient0", "patient0", "patient1", "patient1", "patient2", "patient2"]


def test_default_group_column_may_be_absent_but_a_named_one_may_not(
    tmp_path: Path, pixels, save, metadata_csv
) -> None:
    root = tmp_path / "d"
    for i in range(4):
        save(root / f"x{i}.png", pixels(i))
    metadata_csv(
        root / "metadata.csv",
        [(f"x{i}.png", "positive" if i < 2 else "negative") for i in range(4)],
        header=("image", "label"),
    )
    assert scan_dataset(DataConfig(path=str(root)))["group"].isna().all()
    with pytest.raises(DataError, match=r"column\(s\) \['patient'\] not found"):
        scan_dataset(DataConfig(path=str(root), group_column="patient"))


def test_label_outside_the_declared_set_names_the_row(tmp_path: Path, metadata_dataset, metadata_csv) -> None:
    root = metadata_dataset(tmp_path / "d", 3, 3)
    rows = [line.split(",") for line in (root / "metadata.csv").read_text().splitlines()[1:]]
    rows[5][1] = "maybe"  # the 6th data row: row 7 counting the header as row 1
    metadata_csv(root / "metadata.csv", rows)
    with pytest.raises(DataError) as info:
        scan_dataset(DataConfig(path=str(root)))
    assert "metadata.csv: row 7: label 'maybe' is not one of ['negative', 'positive']" in str(info.value)


def test_many_offenders_are_capped(tmp_path: Path, metadata_csv) -> None:
    root = tmp_path / "d"
    metadata_csv(root / "metadata.csv", [(f"gone{i}.png", "positive", "") for i in range(9)])
    with pytest.raises(DataError) as info:
        scan_dataset(DataConfig(path=str(root)))
    message = str(info.value)
    assert "row 2: file 'gone0.png' not found" in message and "row 6: file 'gone4.png'" in message
    assert "gone5.png" not in message and "and 4 more" in message


def test_metadata_row_with_missing_file_is_refused(tmp_path: Path, metadata_dataset) -> None:
    root = metadata_dataset(tmp_path / "d", 3, 3)
    (root / "img" / "neg_004.png").unlink()
    with pytest.raises(DataError, match=r"row 6: file 'img/neg_004.png' not found"):
        scan_dataset(DataConfig(path=str(root)))


def test_image_listed_twice_is_refused(tmp_path: Path, metadata_dataset) -> None:
    root = metadata_dataset(tmp_path / "d", 3, 3)
    with (root / "metadata.csv").open("a") as fh:
        fh.write("img/pos_000.png,negative,g9\n")
    with pytest.raises(DataError, match=r"rows 2 and 8: 'img/pos_000.png' listed twice"):
        scan_dataset(DataConfig(path=str(root)))


def test_empty_class_in_metadata_is_refused(tmp_path: Path, metadata_dataset) -> None:
    root = metadata_dataset(tmp_path / "d", 4, 0)
    with pytest.raises(DataError, match=r"class 'negative' has no images"):
        scan_dataset(DataConfig(path=str(root)))


def test_missing_columns_list_what_the_csv_has(tmp_path: Path, metadata_csv) -> None:
    root = tmp_path / "d"
    metadata_csv(root / "metadata.csv", [("a.png", "positive")], header=("filename", "label"))
    with pytest.raises(
        DataError, match=r"\['image'\] not found; the CSV has columns \['filename', 'label'\]"
    ):
        scan_dataset(DataConfig(path=str(root)))


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        scan_dataset(DataConfig(path=str(tmp_path / "nowhere")))


def test_spreadsheet_export_with_byte_order_mark(tmp_path: Path, pixels, save) -> None:
    root = tmp_path / "d"
    for i in range(2):
        save(root / f"x{i}.png", pixels(i))
    (root / "metadata.csv").write_text(
        "image,label\nx0.png,positive\nx1.png,negative\n", encoding="utf-8-sig"
    )
    assert scan_dataset(DataConfig(path=str(root)))["label"].tolist() == [1, 0]
