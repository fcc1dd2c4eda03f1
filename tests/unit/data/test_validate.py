"""Image checks: corrupt, truncated and non-image files; skipping; the hash cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clot_hpo.config import DataConfig
from clot_hpo.data import validate as validate_mod
from clot_hpo.data.scan import scan_dataset
from clot_hpo.data.validate import inspect_image, validate_images
from clot_hpo.errors import DataError


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    ("mode", "fmt", "suffix"),
    [
        ("L", "PNG", "png"),
        ("RGB", "PNG", "png"),
        ("RGBA", "PNG", "png"),
        ("RGB", "JPEG", "jpg"),
        ("L", "JPEG", "jpeg"),
    ],
)
def test_good_images_pass_with_hashes(tmp_path: Path, pixels, save, mode: str, fmt: str, suffix: str) -> None:
    path = save(tmp_path / f"a.{suffix}", pixels(1, 40), mode=mode, fmt=fmt)
    info = inspect_image(path, "a")
    assert info.ok, info.error
    assert (info.width, info.height, info.mode, info.format) == (40, 40, mode, fmt)
    assert len(info.sha256) == 64 and len(info.pixel_sha256) == 64 and len(info.phash) == 16


def test_same_pixels_in_another_encoding_share_the_pixel_hash(tmp_path: Path, pixels, save) -> None:
    a = inspect_image(save(tmp_path / "a.png", pixels(3)))
    (tmp_path / "b.png").write_bytes(b"")
    from PIL import Image

    Image.open(tmp_path / "a.png").save(tmp_path / "b.png", compress_level=9)
    b = inspect_image(tmp_path / "b.png")
    assert a.sha256 != b.sha256
    assert a.pixel_sha256 == b.pixel_sha256


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate_png", "truncated"),
        ("truncate_jpeg", "truncated"),
        ("garbage_in_png", "corrupt"),
        ("text_file", "not an image"),
        ("empty", "empty file"),
        ("gif", "unsupported format GIF"),
    ],
)
def test_bad_files_are_reported_not_raised(tmp_path: Path, pixels, save, damage: str, expected: str) -> None:
    if damage == "truncate_png":
        path = save(tmp_path / "x.png", pixels(2, 64))
        _truncate(path)
    elif damage == "truncate_jpeg":
        path = save(tmp_path / "x.jpg", pixels(2, 64), fmt="JPEG")
        _truncate(path)
    elif damage == "garbage_in_png":
        path = save(tmp_path / "x.png", pixels(2, 64))
        data = bytearray(path.read_bytes())
        data[60:120] = b"\x00" * 60
        path.write_bytes(bytes(data))
    elif damage == "text_file":
        path = tmp_path / "x.png"
        path.write_text("hello, I am not a picture")
    elif damage == "empty":
        path = tmp_path / "x.png"
        path.write_bytes(b"")
    else:
        path = save(tmp_path / "x.png", pixels(2), fmt="GIF")
    info = inspect_image(path)
    assert not info.ok
    assert info.error.startswith(expected), info.error


def _dataset_with_bad_file(tmp_path: Path, folders_dataset) -> tuple[DataConfig, Path]:
    root = folders_dataset(tmp_path / "d", 5, 5)
    bad = root / "negative" / "n002.png"
    _truncate(bad)
    return DataConfig(path=str(root)), bad


def test_bad_image_is_refused_by_name(tmp_path: Path, folders_dataset) -> None:
    cfg, _ = _dataset_with_bad_file(tmp_path, folders_dataset)
    with pytest.raises(
        DataError, match=r"1 unusable image\(s\): negative/n002.png: truncated.*--skip-corrupt"
    ):
        validate_images(scan_dataset(cfg))


def test_skip_corrupt_drops_and_lists_each_file(tmp_path: Path, folders_dataset, caplog) -> None:
    cfg, bad = _dataset_with_bad_file(tmp_path, folders_dataset)
    (bad.parent / "n003.png").write_text("nope")
    result = validate_images(scan_dataset(cfg), skip_corrupt=True)
    assert len(result.frame) == 8
    assert sorted(Path(p).name for p, _ in result.skipped) == ["n002.png", "n003.png"]
    assert all(reason for _, reason in result.skipped)
    assert "n002.png" not in set(result.frame["relpath"].str.split("/").str[-1])
    assert {"sha256", "pixel_sha256", "phash", "width", "height"} <= set(result.frame.columns)
    assert sum("skipped" in r.message and "n00" in r.message for r in caplog.records) == 2


def test_cache_skips_unchanged_files_and_rechecks_changed_ones(
    tmp_path: Path, folders_dataset, pixels, save, monkeypatch
) -> None:
    root = folders_dataset(tmp_path / "d", 4, 4)
    frame = scan_dataset(DataConfig(path=str(root)))
    cache = tmp_path / "out" / "image_index.csv"
    first = validate_images(frame, cache_path=cache)
    assert cache.is_file()

    calls: list[str] = []
    real = validate_mod.inspect_image

    def counting(path, relpath=None, **limits):
        calls.append(str(relpath))
        return real(path, relpath, **limits)

    monkeypatch.setattr(validate_mod, "inspect_image", counting)
    again = validate_images(frame, cache_path=cache)
    assert calls == []
    assert again.frame["phash"].tolist() == first.frame["phash"].tolist()

    changed = root / "positive" / "p001.png"
    save(changed, pixels(777))
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    third = validate_images(frame, cache_path=cache)
    assert calls == ["positive/p001.png"]
    row = third.frame["relpath"] == "positive/p001.png"
    assert third.frame.loc[row, "sha256"].item() != first.frame.loc[row, "sha256"].item()


def test_damaged_cache_is_ignored(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 3, 3)
    cache = tmp_path / "image_index.csv"
    cache.write_text("# clot-hpo image index v1\nrelpath,size\nfoo,notanumber\n")
    result = validate_images(scan_dataset(DataConfig(path=str(root))), cache_path=cache)
    assert len(result.frame) == 6
