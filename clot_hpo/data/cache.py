"""Decode once per image size for a whole study: an on-disk cache of decoded arrays.

Decoding and resizing PNGs is the same work for every trial that uses an image size, so the
first trial that needs a split at a size writes it as one ``.npy`` file
(``(N, S, S, 3)`` uint8, in manifest order; float32 when the split holds DICOM files, whose
windowed pixels are not rounded to 8 bits) and every later trial, in any worker sharing the
folder, maps it with ``np.load(mmap_mode="r")``: nothing is decoded again, and pages are
shared between processes through the operating system's page cache.

A file's name carries its key: a digest of the split's rows (path and label, in order), the
dataset's content digest, the image size, the DICOM window and frame settings and
:data:`CACHE_VERSION` (bumped whenever decoding
changes), so changed data or a changed split never reads a stale file. Two workers that miss
at once both decode, each into a temporary file that ``os.replace`` then moves into place
atomically: a reader sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clot_hpo.data.dicom import DicomSettings
from clot_hpo.data.limits import DEFAULT_DECODE_MEMORY_MB, DEFAULT_MAX_PIXELS
from clot_hpo.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

log = logging.getLogger(__name__)

# Bump when _decode_resize (clot_hpo.data.pipeline) changes what it produces.
CACHE_VERSION = 2  # 2: DICOM files (float32), keyed by their window and frame settings
_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))


def cache_key(
    paths: Sequence[str | Path],
    labels: Sequence[float] | np.ndarray,
    *,
    image_size: int,
    data_digest: str = "",
    dicom: DicomSettings | None = None,
) -> str:
    """The hex digest that names one split's cache file at one image size."""
    tag = (dicom or DicomSettings()).tag()
    head = f"clot-hpo decode cache v{CACHE_VERSION}\n{image_size}\n{data_digest}\n{tag}\n"
    digest = hashlib.sha256(head.encode())
    for path, label in zip(paths, np.asarray(labels).tolist(), strict=True):
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()


def cache_path(folder: str | Path, split: str, image_size: int, key: str) -> Path:
    """Where the cache file of ``split`` at ``image_size`` with ``key`` lives."""
    return Path(folder) / f"{split}-{image_size}px-{key[:20]}.npy"


def _open(path: Path, count: int, image_size: int) -> np.ndarray | None:
    """The memory-mapped array at ``path`` if it is whole and has the expected shape, else None."""
    try:
        images: np.ndarray = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # unreadable: rebuilt below, then replaced
        log.warning("decode cache %s is unreadable (%s); decoding again", path, exc)
        return None
    expected = (count, image_size, image_size, 3)
    if images.shape != expected or images.dtype not in _DTYPES:
        log.warning(
            "decode cache %s holds %s %s, expected %s uint8 or float32; decoding again",
            path,
            images.dtype,
            images.shape,
            expected,
        )
        return None
    return images


def decoded_images(
    paths: Sequence[str | Path],
    labels: Sequence[float] | np.ndarray,
    *,
    image_size: int,
    folder: str | Path | None,
    split: str,
    data_digest: str = "",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * 2**20,
    dicom: DicomSettings | None = None,
) -> np.ndarray:
    """The split's images as ``(N, S, S, 3)`` (uint8; float32 with DICOM), from the cache when it has them.

    ``max_pixels`` and ``memory_bytes`` bound a decode (``data.max_pixels``,
    ``data.decode_memory_mb``), ``dicom`` windows DICOM files (``data.dicom``); see
    :func:`clot_hpo.data.pipeline.decode_images`.

    Args:
        paths: the split's image files, in manifest order.
        labels: their labels (part of the key: a relabelled split is another split).
        image_size: side S of the square images.
        folder: the study's cache folder; ``None`` decodes into memory without caching.
        split: ``train``, ``val`` or ``test`` (names the file).
        data_digest: the dataset's content digest (``PreparedData.digest``).

    Returns:
        A read-only memory map of the cache file (an in-memory array when ``folder`` is None).

    Raises:
        DataError: an image cannot be decoded (the message names it).
    """
    from clot_hpo.data.pipeline import decode_images

    if len(paths) != len(labels):
        raise ValueError(
            f"paths and labels must have the same length, but got {len(paths)} and {len(labels)}"
        )
    if folder is None:
        return decode_images(paths, image_size, max_pixels=max_pixels, memory_bytes=memory_bytes, dicom=dicom)
    key = cache_key(paths, labels, image_size=image_size, data_digest=data_digest, dicom=dicom)
    path = cache_path(folder, split, image_size, key)
    cached = _open(path, len(paths), image_size)
    if cached is not None:
        return cached
    images = decode_images(paths, image_size, max_pixels=max_pixels, memory_bytes=memory_bytes, dicom=dicom)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(partial, "wb") as fh:  # a file object: np.save would append ".npy" to a name
            np.save(fh, images, allow_pickle=False)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        # A full or read-only disk costs speed, not the trial: train from memory.
        log.warning("could not write the decode cache %s (%s); using the images from memory", path, exc)
        return images
    opened = _open(path, len(paths), image_size)
    if opened is None:
        raise DataError(f"{path}: the decode cache just written cannot be read back")
    return opened


def unique_keys(hashes: Sequence[str]) -> list[str]:
    """Content hashes as unique keys: a repeated hash gets ``#2``, ``#3``... on its later rows."""
    seen: dict[str, int] = {}
    keys = []
    for digest in hashes:
        seen[digest] = seen.get(digest, 0) + 1
        keys.append(digest if seen[digest] == 1 else f"{digest}#{seen[digest]}")
    return keys


class DecodedSplits:
    """A study's splits, decoded at one image size through the cache (read on first use).

    Args:
        manifest_path: CSV with ``path``, ``label`` and ``split`` columns, and ``sha256``
            for :meth:`keys` (the study's ``trial_manifest.csv``).
        image_size: side of the square images.
        folder: the study's cache folder (``None``: decode into memory, no cache).
        data_digest: the dataset's content digest (part of the cache key).
        max_pixels: largest width x height decoded (``data.max_pixels``), from each header.
        memory_bytes: memory budget of the decodes in flight (``data.decode_memory_mb``).
        dicom: DICOM window and frame settings (``data.dicom``).
    """

    def __init__(
        self,
        manifest_path: str | Path,
        *,
        image_size: int,
        folder: str | Path | None,
        data_digest: str = "",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * 2**20,
        dicom: DicomSettings | None = None,
    ) -> None:
        import pandas as pd

        frame = pd.read_csv(manifest_path)
        missing = {"path", "label", "split"} - set(frame.columns)
        if missing:
            raise DataError(
                f"{manifest_path}: a trial manifest needs columns path, label and split, "
                f"but {sorted(missing)} are missing"
            )
        self.image_size = image_size
        self.folder = folder
        self.data_digest = data_digest
        self.max_pixels = max_pixels
        self.memory_bytes = memory_bytes
        self.dicom = dicom
        self._parts = {str(name): part.reset_index(drop=True) for name, part in frame.groupby("split")}
        self._images: dict[str, np.ndarray] = {}

    def paths(self, split: str) -> list[str]:
        """The split's image files, in manifest order."""
        return [str(p) for p in self._part(split)["path"]]

    def labels(self, split: str) -> np.ndarray:
        """The split's labels (float32), in manifest order."""
        return np.asarray(self._part(split)["label"], dtype=np.float32)

    def folds(self, split: str) -> np.ndarray:
        """The split's cross-validation fold numbers (``search.cv_folds``), in manifest order.

        Raises:
            DataError: the manifest has no ``fold`` column (the study was not cross-validated).
        """
        part = self._part(split)
        if "fold" not in part.columns:
            raise DataError(f"the trial manifest has no `fold` column (columns: {list(part.columns)})")
        return np.asarray(part["fold"], dtype=np.int64)

    def keys(self, split: str) -> list[str]:
        """The split's image keys, in manifest order: each file's content hash (``sha256``).

        Never a path: a key names the picture wherever it is stored. A file repeated within a
        split gets ``#2``, ``#3``... on its later rows, so keys are unique and still line up
        between two models scored on the same manifest.

        Raises:
            DataError: the manifest has no ``sha256`` column (written by an older version).
        """
        return unique_keys(self.hashes(split))

    def hashes(self, split: str) -> list[str]:
        """The split's files' content hashes (``sha256``), in manifest order, repeats kept.

        Raises:
            DataError: the manifest has no ``sha256`` column (written by an older version).
        """
        part = self._part(split)
        if "sha256" not in part.columns:
            raise DataError(f"the trial manifest has no `sha256` column (columns: {list(part.columns)})")
        return [str(h) for h in part["sha256"]]

    def images(self, split: str) -> np.ndarray:
        """The split's ``(N, S, S, 3)`` images (uint8; float32 with DICOM), decoded or mapped once."""
        if split not in self._images:
            self._images[split] = decoded_images(
                self.paths(split),
                self.labels(split),
                image_size=self.image_size,
                folder=self.folder,
                split=split,
                data_digest=self.data_digest,
                max_pixels=self.max_pixels,
                memory_bytes=self.memory_bytes,
                dicom=self.dicom,
            )
        return self._images[split]

    def decode(self, splits: Sequence[str] = ("train", "val", "test")) -> DecodedSplits:
        """Decode (or map from the cache) each of ``splits`` now, not on first use; returns self."""
        for split in splits:
            self.images(split)
        return self

    def dataset(
        self,
        split: str,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = False,
        max_images: int | None = None,
        sample_seed: int = 0,
    ) -> tf.data.Dataset:
        """The split as batches of ``(images, labels)`` (:func:`~clot_hpo.data.pipeline.make_array_dataset`).

        Args:
            split: ``train``, ``val`` or ``test``.
            batch_size: images per batch.
            seed: the shuffle's seed.
            shuffle: reshuffle every epoch.
            max_images: at most this many images, a seeded sample (:meth:`sample_rows`).
            sample_seed: the sample's seed (the study's: every trial trains on the same images).
        """
        from clot_hpo.data.pipeline import make_array_dataset

        return make_array_dataset(
            self.images(split),
            self.labels(split),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            rows=self.sample_rows(split, max_images, sample_seed),
        )

    def sample_rows(self, split: str, cap: int | None, seed: int) -> np.ndarray | None:
        """Row numbers of a seeded sample of at most ``cap`` images (None: every row, in order).

        The rows pandas' ``DataFrame.sample(n=cap, random_state=seed)`` picks, in its order.
        """
        part = self._part(split)
        if cap is None or len(part) <= cap:
            return None
        return np.asarray(part.sample(n=cap, random_state=seed).index, dtype=np.int64)

    def _part(self, split: str) -> pd.DataFrame:
        if split not in self._parts:
            raise DataError(f"the trial manifest has no {split!r} rows (splits: {sorted(self._parts)})")
        return self._parts[split]
