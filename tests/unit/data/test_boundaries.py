"""Issue 12, items 6 and the smaller findings: the data root, names, DICOM, pixel limits.

Each test reproduces one finding of the review: it failed on the code before the fix.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clot_hpo.config import DataConfig
from clot_hpo.data.leakage import find_leakage
from clot_hpo.data.scan import scan_dataset
from clot_hpo.data.validate import inspect_image, inspect_images, validate_images
from clot_hpo.errors import DataError


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares ``width x height`` grey pixels (one row of data).

    Decoding it would allocate ``width * height`` bytes and then fail as truncated; a check
    of the declared size refuses it before any of that.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (width + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


def dicom_bytes() -> bytes:
    """The start of a DICOM file, a 128-byte preamble and ``DICM``, and no image after it."""
    return b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + b"\x00" * 64


# ----- the data root ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_metadata_row_outside_the_data_root_is_refused_by_row(
    tmp_path: Path, metadata_dataset, metadata_csv, pixels, save, how: str
) -> None:
    root = metadata_dataset(tmp_path / "d", 6, 6)
    secret = save(tmp_path / "elsewhere" / "patient_smith.png", pixels(77))
    if how == "absolute":
        entry = str(secret)
    elif how == "dotdot":
        entry = "../elsewhere/patient_smith.png"
    else:
        os.symlink(secret, root / "img" / "link.png")
        entry = "img/link.png"
    rows = [line.split(",") for line in (root / "metadata.csv").read_text().splitlines()[1:]]
    metadata_csv(root / "metadata.csv", [*rows, (entry, "positive", "g99")])
    with pytest.raises(DataError, match=r"row 14: .*outside the data folder.*allow_outside_root") as err:
        scan_dataset(DataConfig(path=str(root)))
    assert entry in str(err.value) or "link.png" in str(err.value)


def test_outside_the_root_is_allowed_only_when_asked(
    tmp_path: Path, metadata_dataset, metadata_csv, pixels, save
) -> None:
    root = metadata_dataset(tmp_path / "d", 6, 6)
    save(tmp_path / "elsewhere" / "x.png", pixels(77))
    rows = [line.split(",") for line in (root / "metadata.csv").read_text().splitlines()[1:]]
    metadata_csv(root / "metadata.csv", [*rows, ("../elsewhere/x.png", "positive", "g99")])
    frame = scan_dataset(DataConfig(path=str(root), allow_outside_root=True))
    assert len(frame) == 13


def test_etc_passwd_row_is_refused_even_with_skip_corrupt(
    tmp_path: Path, metadata_dataset, metadata_csv
) -> None:
    root = metadata_dataset(tmp_path / "d", 6, 6)
    rows = [line.split(",") for line in (root / "metadata.csv").read_text().splitlines()[1:]]
    depth = "../" * len(root.resolve().parts)
    metadata_csv(root / "metadata.csv", [*rows, (f"{depth}etc/passwd", "negative", "g99")])
    with pytest.raises(DataError, match=r"row 14: .*etc/passwd.*outside the data folder"):
        scan_dataset(DataConfig(path=str(root), skip_corrupt=True))


def test_folder_symlink_leaving_the_root_is_refused(tmp_path: Path, folders_dataset, pixels, save) -> None:
    root = folders_dataset(tmp_path / "d", 4, 4)
    outside = save(tmp_path / "private" / "scan.png", pixels(5))
    os.symlink(outside, root / "positive" / "innocent.png")
    with pytest.raises(DataError, match=r"positive/innocent\.png: outside the data folder"):
        scan_dataset(DataConfig(path=str(root)))


def test_a_symlink_cannot_put_one_file_in_both_classes(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 4, 4)
    os.symlink(root / "negative" / "n001.png", root / "positive" / "p_copy.png")
    with pytest.raises(DataError, match=r"positive/p_copy\.png.*negative/n001\.png.*same file.*both classes"):
        scan_dataset(DataConfig(path=str(root)))


# ----- names and formats ------------------------------------------------------------------
def test_non_utf8_file_name_is_named(tmp_path: Path, folders_dataset, pixels, save) -> None:
    root = folders_dataset(tmp_path / "d", 4, 4)
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    save(root / "positive" / name, pixels(9))
    with pytest.raises(DataError, match=r"caf\\xe9\.png.*not valid UTF-8"):
        scan_dataset(DataConfig(path=str(root)))


# Issue 23 turned DICOM from refused into read: a file without an image is refused as such.
def test_dicom_in_a_class_folder_is_listed_and_one_without_an_image_named(
    tmp_path: Path, folders_dataset
) -> None:
    root = folders_dataset(tmp_path / "d", 4, 4)
    (root / "negative" / "series1.dcm").write_bytes(dicom_bytes())
    frame = scan_dataset(DataConfig(path=str(root)))
    assert "negative/series1.dcm" in set(frame["relpath"])
    with pytest.raises(DataError, match=r"negative/series1\.dcm: no pixel data .*transfer syntax"):
        validate_images(frame)


def test_dicom_row_in_metadata_is_listed(tmp_path: Path, metadata_dataset, metadata_csv) -> None:
    root = metadata_dataset(tmp_path / "d", 6, 6)
    (root / "img" / "ct.dcm").write_bytes(dicom_bytes())
    rows = [line.split(",") for line in (root / "metadata.csv").read_text().splitlines()[1:]]
    metadata_csv(root / "metadata.csv", [*rows, ("img/ct.dcm", "positive", "g99")])
    assert "img/ct.dcm" in set(scan_dataset(DataConfig(path=str(root)))["relpath"])


def test_dicom_named_png_is_read_as_dicom_and_skippable(tmp_path: Path, folders_dataset) -> None:
    root = folders_dataset(tmp_path / "d", 4, 4)
    (root / "positive" / "p000.png").write_bytes(dicom_bytes())
    frame = scan_dataset(DataConfig(path=str(root)))
    with pytest.raises(DataError, match=r"positive/p000\.png: no pixel data"):
        validate_images(frame)
    result = validate_images(frame, skip_corrupt=True)
    assert [Path(p).name for p, _ in result.skipped] == ["p000.png"]


# ----- pixel limits -------------------------------------------------------------------------
def test_bomb_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    # 12000 x 12000 = 144 Mpx: above the default limit, below Pillow's own error (179 Mpx).
    path = bomb_png(tmp_path / "bomb.png", 12_000, 12_000)
    assert path.stat().st_size < 1_000
    info = inspect_image(path, "bomb.png")
    assert not info.ok
    assert "too many pixels" in info.error and "12000 x 12000" in info.error
    assert "50,000,000" in info.error


def test_pixel_limit_is_configurable(tmp_path: Path, pixels, save) -> None:
    path = save(tmp_path / "a.png", pixels(1, 40))
    assert inspect_image(path, "a.png", max_pixels=40 * 40).ok
    refused = inspect_image(path, "a.png", max_pixels=40 * 40 - 1)
    assert "too many pixels" in refused.error and "1,599" in refused.error


def test_validation_decodes_within_a_memory_budget(
    tmp_path: Path, pixels, save, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [str(save(tmp_path / f"{i:02d}.png", pixels(i, 64))) for i in range(40)]
    in_flight, most = 0, 0
    lock = threading.Lock()
    original = Image.Image.load

    def counting_load(self: Image.Image) -> object:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            time.sleep(0.002)
            return original(self)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(Image.Image, "load", counting_load)
    one_image = 64 * 64 * (3 + 3 + 3)  # RGB decoded, then an RGB copy, then uint8 pixels
    infos = inspect_images(paths, paths, workers=8, memory_bytes=2 * one_image + 1)
    assert all(info.ok for info in infos)
    assert most <= 2, most  # eight threads, but only two images fit in the budget


# ----- hashing what training decodes --------------------------------------------------------
def test_two_different_16_bit_scans_are_not_exact_duplicates(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        # Every value above 255: clipped to 8 bits, both scans would be plain white.
        scan = rng.integers(1_000, 65_535, (32, 32), dtype=np.uint16)
        path = tmp_path / f"scan{i}.png"
        Image.fromarray(scan).save(path)
        assert Image.open(path).mode.startswith("I")
        paths.append(path)
    a, b = (inspect_image(p, p.name) for p in paths)
    assert a.ok and b.ok
    assert a.pixel_sha256 != b.pixel_sha256
    import pandas as pd

    frame = pd.DataFrame(
        {
            "relpath": ["scan0.png", "scan1.png"],
            "label": [0, 1],
            "split": ["train", "test"],
            "pixel_sha256": [a.pixel_sha256, b.pixel_sha256],
            "phash": [a.phash, b.phash],
        }
    )
    assert find_leakage(frame, max_distance=0).n_exact == 0


def test_the_pixel_hash_is_of_what_training_decodes(tmp_path: Path) -> None:
    import hashlib

    scan = np.random.default_rng(1).integers(0, 65_535, (20, 30), dtype=np.uint16)
    Image.fromarray(scan).save(tmp_path / "s.png")
    # TensorFlow's decode_image(dtype=uint8) keeps the high byte of 16-bit samples.
    eight = (scan >> 8).astype(np.uint8)
    rgb = np.repeat(eight[:, :, None], 3, axis=2)
    expected = hashlib.sha256(b"30x20:" + rgb.tobytes()).hexdigest()
    assert inspect_image(tmp_path / "s.png").pixel_sha256 == expected
