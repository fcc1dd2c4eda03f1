"""Small on-disk datasets for the data-layer tests."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage


def smooth_pixels(seed: int, size: int = 48) -> np.ndarray:
    """A smooth random RGB picture: distinct perceptual hashes for distinct seeds.

    An 8x8 grid of random colours, interpolated: coarse enough that re-encoding or a small
    brightness change keeps the perceptual hash (near duplicates stay near), varied enough
    that two seeds differ by ~20+ of 64 hash bits.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (8, 8, 3))
    big = ndimage.zoom(coarse, (size / 8, size / 8, 1), order=1)[:size, :size]
    big = (big - big.min()) / (np.ptp(big) + 1e-9)
    return np.round(30 + 190 * big).astype(np.uint8)


def save_image(path: Path, pixels: np.ndarray, *, mode: str = "RGB", fmt: str | None = None) -> Path:
    """Save ``pixels`` (H, W, 3 uint8) converted to ``mode`` (L, RGB, RGBA...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels).convert(mode)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def folders_dataset() -> Callable[..., Path]:
    """``make(root, n_pos, n_neg, ...)`` writes ``root/positive`` and ``root/negative``."""

    def make(
        root: Path,
        n_pos: int = 10,
        n_neg: int = 10,
        *,
        pos_dir: str = "positive",
        neg_dir: str = "negative",
        size: int = 48,
        seed: int = 0,
    ) -> Path:
        for i in range(n_pos):
            save_image(root / pos_dir / f"p{i:03d}.png", smooth_pixels(seed * 100_000 + i, size))
        for i in range(n_neg):
            save_image(root / neg_dir / f"n{i:03d}.png", smooth_pixels(seed * 100_000 + 50_000 + i, size))
        (root / pos_dir).mkdir(parents=True, exist_ok=True)
        (root / neg_dir).mkdir(parents=True, exist_ok=True)
        return root

    return make


def write_metadata(
    path: Path, rows: Iterable[Iterable[object]], header: Iterable[str] = ("image", "label", "group")
) -> Path:
    """Write a metadata CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(header))
        writer.writerows([list(r) for r in rows])
    return path


@pytest.fixture
def metadata_dataset() -> Callable[..., Path]:
    """``make(root, n_pos, n_neg, per_group=...)``: images in ``root/img`` and ``metadata.csv``."""

    def make(
        root: Path,
        n_pos: int = 12,
        n_neg: int = 12,
        *,
        per_group: int | None = 2,
        seed: int = 0,
    ) -> Path:
        rows = []
        for i in range(n_pos + n_neg):
            label = "positive" if i < n_pos else "negative"
            rel = f"img/{label[:3]}_{i:03d}.png"
            save_image(root / rel, smooth_pixels(seed * 100_000 + i))
            group = f"g{i // per_group:03d}" if per_group else ""
            rows.append((rel, label, group))
        write_metadata(root / "metadata.csv", rows)
        return root

    return make


@pytest.fixture
def pixels() -> Callable[..., np.ndarray]:
    """:func:`smooth_pixels` for tests that write their own files."""
    return smooth_pixels


@pytest.fixture
def save() -> Callable[..., Path]:
    """:func:`save_image` for tests that write their own files."""
    return save_image


@pytest.fixture
def metadata_csv() -> Callable[..., Path]:
    """:func:`write_metadata` for tests that write their own CSV."""
    return write_metadata
