"""The tf.data pipeline: every input kind decodes to (S, S, 3) float32 in [0, 255]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clot_hpo.data.pipeline import (
    decode_images,
    list_images,
    load_image_batch,
    make_array_dataset,
    make_dataset,
)
from clot_hpo.errors import DataError


@pytest.fixture
def mixed_files(tmp_path: Path, pixels, save) -> list[Path]:
    """One file per kind users have: gray/RGB/RGBA PNG, RGB/gray JPEG, 16-bit PNG, odd sizes."""
    files = [
        save(tmp_path / "gray.png", pixels(1, 40), mode="L"),
        save(tmp_path / "rgb.png", pixels(2, 64), mode="RGB"),
        save(tmp_path / "rgba.png", pixels(3, 24), mode="RGBA"),
        save(tmp_path / "photo.jpg", pixels(4, 50), mode="RGB", fmt="JPEG"),
        save(tmp_path / "gray.jpeg", pixels(5, 33), mode="L", fmt="JPEG"),
        save(tmp_path / "palette.png", pixels(6, 30), mode="P"),
    ]
    wide = np.zeros((20, 70, 3), dtype=np.uint8)
    wide[:, 35:] = 200
    files.append(save(tmp_path / "wide.png", wide))
    deep = tmp_path / "deep16.png"
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 28).astype(np.uint16)).save(deep)
    files.append(deep)
    return files


def test_every_input_kind_decodes_to_three_channels(mixed_files: list[Path]) -> None:
    ds = make_dataset(mixed_files, [1, 0] * 4, image_size=32, batch_size=3, shuffle=False, seed=0)
    batches = list(ds.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert [b[0].shape[0] for b in batches] == [3, 3, 2]
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.float32 and labels.tolist() == [1, 0] * 4
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 100  # raw pixels, not [0, 1]
    gray = images[0]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_pixels_are_not_altered_beyond_resizing(tmp_path: Path, pixels, save) -> None:
    original = pixels(9, 32)
    path = save(tmp_path / "same.png", original)
    (image,), _ = next(iter(make_dataset([path], [1], image_size=32, batch_size=1, shuffle=False, seed=0)))
    assert np.array_equal(image.numpy().astype(np.uint8), original)  # no augmentation, no rescale


def test_load_image_batch_matches_the_dataset(mixed_files: list[Path]) -> None:
    ds = make_dataset(
        mixed_files, [0] * len(mixed_files), image_size=24, batch_size=64, shuffle=False, seed=0
    )
    from_ds = next(iter(ds))[0].numpy()
    batch = load_image_batch(mixed_files, 24)
    assert batch.dtype == np.float32 and batch.shape == (len(mixed_files), 24, 24, 3)
    assert np.array_equal(batch, from_ds)
    assert load_image_batch([], 24).shape == (0, 24, 24, 3)


def test_shuffle_is_seeded_and_cache_repeat_work(tmp_path: Path, pixels, save) -> None:
    files = [save(tmp_path / f"{i}.png", pixels(i, 16)) for i in range(12)]
    labels = list(range(12))

    def order(seed: int) -> list[float]:
        ds = make_dataset(files, labels, image_size=8, batch_size=12, shuffle=True, seed=seed)
        return next(iter(ds))[1].numpy().tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == labels

    ds = make_dataset(
        files, labels, image_size=8, batch_size=5, shuffle=False, seed=0, cache=True, repeat=True
    )
    seen = [y for _, ys in ds.take(6) for y in ys.numpy().tolist()]
    assert seen[:12] == labels and seen[12:24] == labels[:12]


def test_undecodable_file_is_named(tmp_path: Path, pixels, save) -> None:
    good = save(tmp_path / "good.png", pixels(1, 16))
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError, match=r"1 unusable image\(s\): \S*bad\.png: "):
        load_image_batch([good, bad], 16)


def test_list_images_recurses_and_filters(tmp_path: Path, pixels, save) -> None:
    a = save(tmp_path / "x" / "a.PNG", pixels(1, 16))
    b = save(tmp_path / "x" / "sub" / "b.jpg", pixels(2, 16), fmt="JPEG")
    (tmp_path / "x" / "notes.txt").write_text("no")
    single = save(tmp_path / "single.jpeg", pixels(3, 16), fmt="JPEG")
    assert list_images([tmp_path / "x", single, a]) == sorted([a, b, single])
    with pytest.raises(DataError, match="missing.png: not found"):
        list_images([tmp_path / "missing.png"])
    with pytest.raises(DataError, match="notes.txt: not a PNG/JPEG/DICOM file"):
        list_images([tmp_path / "x" / "notes.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG/DICOM images found"):
        list_images([tmp_path / "empty"])


def test_arrays_give_the_batches_the_files_give(tmp_path: Path, pixels, save) -> None:
    """Decoded once (the study's cache) or as it goes: the same images, labels and order."""
    files = [save(tmp_path / f"{i}.png", pixels(i, 20)) for i in range(11)]
    labels = [float(i % 2) for i in range(11)]
    images = decode_images(files, 12)
    assert images.dtype == np.uint8 and images.shape == (11, 12, 12, 3)
    for shuffle in (False, True):
        from_files = make_dataset(
            files, labels, image_size=12, batch_size=4, shuffle=shuffle, seed=3, repeat=True
        )
        from_arrays = make_array_dataset(images, labels, batch_size=4, shuffle=shuffle, seed=3, repeat=True)
        for (xf, yf), (xa, ya) in zip(from_files.take(7), from_arrays.take(7), strict=True):  # across epochs
            assert xa.dtype == xf.dtype and xa.shape[1:] == (12, 12, 3)
            assert np.array_equal(xa.numpy(), xf.numpy()) and np.array_equal(ya.numpy(), yf.numpy())


def test_array_rows_select_and_order_a_subset() -> None:
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(3, axis=-1)
    ds = make_array_dataset(images, [0, 1, 0, 1, 0, 1], batch_size=10, shuffle=False, seed=0, rows=[4, 0, 5])
    ((x, y),) = list(ds)
    assert x[:, 0, 0, 0].numpy().tolist() == [4.0, 0.0, 5.0]
    assert y.numpy().tolist() == [0.0, 0.0, 1.0]


def test_array_dataset_keeps_float32_pixels_unrounded() -> None:
    # A DICOM window's output: fractions reach the model as they are (issue 23).
    images = np.full((2, 2, 2, 3), 100.25, dtype=np.float32)
    ((x, _),) = list(make_array_dataset(images, [0, 1], batch_size=2, shuffle=False, seed=0))
    assert x.numpy().dtype == np.float32 and float(x.numpy()[0, 0, 0, 0]) == 100.25


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 4, 4, 3), np.float64), [0, 1], "must be uint8 or float32"),
        (np.zeros((2, 4, 4), np.uint8), [0, 1], "must be uint8 or float32"),
        (np.zeros((2, 4, 4, 3), np.uint8), [0], "same length"),
    ],
)
def test_array_dataset_states_what_it_needs(images: np.ndarray, labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_array_dataset(images, labels, batch_size=2, shuffle=False, seed=0)


def test_make_dataset_reads_dicom_in_the_same_seeded_order(tmp_path: Path) -> None:
    # Issue 23: DICOM files decode up front (float32) and batch like the decoded cache does.
    from clot_hpo.data.pipeline import decode_images
    from tests.support.dicom import write_dicom

    paths = [
        write_dicom(
            tmp_path / f"{i}.dcm", np.full((10, 10), 1000 * i, np.uint16), RescaleSlope=1, RescaleIntercept=0
        )
        for i in range(5)
    ]
    labels = [0, 1, 0, 1, 1]
    from_files = make_dataset(paths, labels, image_size=8, batch_size=2, shuffle=True, seed=3)
    images = decode_images(paths, 8)
    assert images.dtype == np.float32
    from_arrays = make_array_dataset(images, labels, batch_size=2, shuffle=True, seed=3)
    for (a, y), (b, z) in zip(from_files, from_arrays, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(y.numpy(), z.numpy())
