"""The study's decode cache: decoded once per split and size, keyed by content, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clot_hpo.data import cache as cache_module
from clot_hpo.data.cache import DecodedSplits, cache_key, decoded_images
from clot_hpo.data.pipeline import decode_images
from clot_hpo.errors import DataError


@pytest.fixture
def files(tmp_path: Path, pixels, save) -> list[Path]:
    return [save(tmp_path / "img" / f"{i}.png", pixels(i, 20)) for i in range(5)]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the decodes (one entry per call, the number of images)."""
    calls: list[int] = []
    real = decode_images

    def counting(paths, size, **limits):  # type: ignore[no-untyped-def]
        calls.append(len(paths))
        return real(paths, size, **limits)

    monkeypatch.setattr("clot_hpo.data.pipeline.decode_images", counting)
    return calls


def test_decoded_once_then_memory_mapped(files: list[Path], tmp_path: Path, decodes: list[int]) -> None:
    labels = [0, 1, 0, 1, 1]
    first = decoded_images(
        files, labels, image_size=12, folder=tmp_path / "cache", split="train", data_digest="d"
    )
    again = decoded_images(
        files, labels, image_size=12, folder=tmp_path / "cache", split="train", data_digest="d"
    )
    assert decodes == [5], "the second call reads the cache"
    assert isinstance(again, np.memmap) and not again.flags.writeable
    assert np.array_equal(first, decode_images(files, 12)) and np.array_equal(again, first)
    (written,) = (tmp_path / "cache").iterdir()
    assert written.name.startswith("train-12px-") and written.suffix == ".npy", "no partial file is left"


def test_the_key_changes_with_size_labels_digest_and_order(files: list[Path]) -> None:
    base = cache_key(files, [0, 1, 0, 1, 1], image_size=12, data_digest="d")
    assert base == cache_key(
        [str(f) for f in files], np.array([0, 1, 0, 1, 1]), image_size=12, data_digest="d"
    )
    assert base != cache_key(files, [0, 1, 0, 1, 1], image_size=16, data_digest="d")
    assert base != cache_key(files, [1, 1, 0, 1, 1], image_size=12, data_digest="d")
    assert base != cache_key(files, [0, 1, 0, 1, 1], image_size=12, data_digest="e")
    assert base != cache_key(files[::-1], [1, 1, 0, 1, 0], image_size=12, data_digest="d")


def test_an_unusable_cache_file_is_decoded_again(
    files: list[Path], tmp_path: Path, decodes: list[int]
) -> None:
    labels = [0] * 5
    decoded_images(files, labels, image_size=12, folder=tmp_path, split="val")
    (written,) = tmp_path.glob("val-*.npy")
    written.write_bytes(b"not an array")
    images = decoded_images(files, labels, image_size=12, folder=tmp_path, split="val")
    np.save(written, np.zeros((5, 8, 8, 3), np.uint8))  # a whole file of the wrong shape
    images = decoded_images(files, labels, image_size=12, folder=tmp_path, split="val")
    assert decodes == [5, 5, 5]
    assert images.shape == (5, 12, 12, 3)


def test_two_writers_racing_leave_one_whole_file(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker moves its file in between this one's write and its move: both read a whole file."""
    real_replace = cache_module.os.replace
    replaced: list[str] = []

    def replace_twice(src: Path, dst: Path) -> None:
        replaced.append(str(dst))
        if len(replaced) == 1:  # the other worker, which missed too, moves its file in first
            decoded_images(files, [0] * 5, image_size=12, folder=tmp_path, split="test")
        real_replace(src, dst)

    monkeypatch.setattr(cache_module.os, "replace", replace_twice)
    images = decoded_images(files, [0] * 5, image_size=12, folder=tmp_path, split="test")
    assert len(replaced) == 2 and replaced[0] == replaced[1]
    assert np.array_equal(images, decode_images(files, 12))
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_without_a_folder_nothing_is_written(files: list[Path], tmp_path: Path) -> None:
    images = decoded_images(files, [0] * 5, image_size=12, folder=None, split="train")
    assert images.shape == (5, 12, 12, 3) and not isinstance(images, np.memmap)


def test_decoded_splits_read_a_manifest(files: list[Path], tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "path": [str(f) for f in files],
            "label": [0, 1, 0, 1, 1],
            "split": ["train", "train", "val", "train", "test"],
        }
    ).to_csv(manifest, index=False)
    splits = DecodedSplits(manifest, image_size=12, folder=tmp_path / "c", data_digest="d")
    assert splits.labels("train").tolist() == [0.0, 1.0, 1.0]
    assert splits.images("train").shape == (3, 12, 12, 3)
    assert (
        splits.sample_rows("train", None, seed=1) is None and splits.sample_rows("train", 5, seed=1) is None
    )
    part = pd.read_csv(manifest).query("split == 'train'")
    expected = [list(part.index).index(i) for i in part.sample(n=2, random_state=1).index]
    assert splits.sample_rows("train", 2, seed=1).tolist() == expected, "the rows DataFrame.sample picks"
    with pytest.raises(DataError, match="has no 'holdout' rows"):
        splits.images("holdout")


def test_decoded_splits_key_images_by_content_not_path(files: list[Path], tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "path": [str(f) for f in files],
            "label": [0, 1, 0, 1, 1],
            "split": ["test"] * 5,
            "sha256": ["aa", "bb", "aa", "cc", "aa"],  # a file repeated within the split
        }
    ).to_csv(manifest, index=False)
    splits = DecodedSplits(manifest, image_size=12, folder=None)
    # Unique within the split, in manifest order; repeats numbered so two models' rows still align.
    assert splits.keys("test") == ["aa", "bb", "aa#2", "cc", "aa#3"]
    pd.read_csv(manifest).drop(columns="sha256").to_csv(manifest, index=False)
    with pytest.raises(DataError, match="no `sha256` column"):
        DecodedSplits(manifest, image_size=12, folder=None).keys("test")


def test_dicom_is_cached_once_as_float32_beside_png(
    files: list[Path], tmp_path: Path, decodes: list[int]
) -> None:
    # Issue 23: a window's output is kept in floating point from the decode to the model input.
    from clot_hpo.data.dicom import DicomSettings, decode_dicom
    from clot_hpo.data.pipeline import resize_pixels
    from tests.support.dicom import write_dicom

    stored = np.linspace(0, 4095, 20 * 20).reshape(20, 20).astype(np.uint16)
    scans = [
        write_dicom(tmp_path / "dcm" / f"{i}.dcm", stored // (i + 1), RescaleIntercept=-1024, RescaleSlope=1)
        for i in range(2)
    ]
    paths, labels = [files[0], *scans], [0, 1, 0]
    settings = DicomSettings(window=(300, 600))
    first = decoded_images(
        paths, labels, image_size=12, folder=tmp_path / "cache", split="val", dicom=settings
    )
    assert first.dtype == np.float32 and first.shape == (3, 12, 12, 3)
    assert np.any(np.abs(first - np.rint(first)) > 0.01)  # not rounded to 8 bits on the way
    expected = resize_pixels(decode_dicom(scans[1], settings=settings, max_pixels=10**6)[0], 12)
    np.testing.assert_allclose(first[2], expected, atol=1e-4)
    np.testing.assert_allclose(first[0], decode_images([files[0]], 12)[0].astype(np.float32))
    again = decoded_images(
        paths, labels, image_size=12, folder=tmp_path / "cache", split="val", dicom=settings
    )
    np.testing.assert_array_equal(again, first)
    other = decoded_images(paths, labels, image_size=12, folder=tmp_path / "cache", split="val")
    assert not np.allclose(other[2], first[2])  # another window is another cache file
    assert decodes == [3, 3]  # the second call read the cache
