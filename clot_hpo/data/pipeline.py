"""``tf.data`` input pipelines: decode, resize, cache, batch, prefetch. No augmentation.

Two sources: image files (:func:`make_dataset`, decoding as it goes) and already decoded
uint8 arrays (:func:`make_array_dataset`, fed by the study's decode cache,
:mod:`clot_hpo.data.cache`, so that trials do not decode the same files again).

Images come out as float32 pixels in [0, 255] with three channels, whatever the file holds
(grayscale, RGB, RGBA, 16-bit PNG, JPEG, DICOM): the backbones rescale inside the model, so a
saved model takes raw pixels. PNG and JPEG files are decoded by TensorFlow; DICOM files by
:func:`clot_hpo.data.dicom.decode_dicom` (rescale, window, MONOCHROME1), whose floating-point
output is resized and kept as float32, never rounded to 8 bits. Augmentation is the
model/trial layer's job (Keras preprocessing layers on training data only); this module never
alters pixel content beyond resizing.

Resized PNG/JPEG images are rounded to uint8 before caching: that keeps the in-memory cache
at a quarter of float32's size (20k images at 240 px: 3.5 GB instead of 14 GB) and loses
nothing that the 8-bit source files held. A set of images with any DICOM file among them is
float32 throughout: a window's output has more than 256 levels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clot_hpo.data.dicom import DicomRefused, DicomSettings, decode_dicom
from clot_hpo.data.limits import (
    DEFAULT_DECODE_MEMORY_MB,
    DEFAULT_MAX_PIXELS,
    Header,
    MemoryBudget,
    check_headers,
    decode_parallelism,
    has_utf8_name,
    is_dicom_file,
    non_utf8_message,
)
from clot_hpo.data.scan import format_offenders, is_image_file
from clot_hpo.errors import DataError
from clot_hpo.util import first_line

if TYPE_CHECKING:
    import tensorflow as tf


def decode_image(raw: tf.Tensor | bytes) -> tf.Tensor:
    """An image file's bytes -> uint8 ``(H, W, 3)``: the one decoder of training, ``predict`` and the page.

    The first frame only (``expand_animations=False``); grayscale becomes RGB, alpha is
    dropped, 16-bit samples are scaled to 8 bits. Callers check the header first
    (:func:`clot_hpo.data.limits.check_headers`, or the page's own check of an upload).
    """
    import tensorflow as tf

    # channels=3 turns grayscale into RGB and drops alpha; expand_animations=False keeps a
    # (H, W, C) shape for every format so the graph has a static rank.
    image = tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor | np.ndarray, image_size: int) -> tf.Tensor:
    """uint8 ``(H, W, 3)`` -> uint8 ``(S, S, 3)``, resized as every model input is."""
    import tensorflow as tf

    # antialias=True: downscaling 512 px scans to 64 px without aliasing artefacts.
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    # saturate_cast clips and casts in one op (measured faster than clip_by_value + cast).
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def _decode_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """File path -> uint8 (S, S, 3) image."""
    import tensorflow as tf

    return resize_image(decode_image(tf.io.read_file(path)), image_size)


def resize_pixels(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """``(H, W, 3)`` pixels resized as training resizes them: uint8 in, uint8 out; float stays float32.

    Bilinear with antialiasing; uint8 images are rounded back to uint8 (as
    :func:`_decode_resize` does), floating-point ones (a DICOM window's output) are not.
    """
    import tensorflow as tf

    if pixels.dtype == np.uint8:
        return np.asarray(resize_image(pixels, image_size))
    resized = tf.image.resize(pixels, [image_size, image_size], method="bilinear", antialias=True)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)


def make_dataset(
    paths: Sequence[str | Path],
    labels: Sequence[float] | np.ndarray,
    *,
    image_size: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    cache: bool = True,
    repeat: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * 2**20,
    dicom: DicomSettings | None = None,
) -> tf.data.Dataset:
    """A batched dataset of ``(images, labels)``.

    Every file's header is checked against ``max_pixels`` first (nothing is decoded above
    it), and files are decoded as many at once as ``memory_bytes`` holds of the largest.
    With DICOM files among ``paths`` the images are decoded up front (:func:`decode_images`)
    and batched from memory in the same seeded order (:func:`make_array_dataset`).

    Args:
        paths: image files.
        labels: one label per path (0/1).
        image_size: side length S of the square output images.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch (seeded, so a run is reproducible).
        seed: shuffle seed.
        cache: keep decoded, resized images in memory after the first pass.
        repeat: repeat forever (use with ``steps_per_epoch``).
        max_pixels: largest width x height decoded (``data.max_pixels``).
        memory_bytes: memory budget of the decodes in flight (``data.decode_memory_mb``).
        dicom: DICOM window and frame settings (``data.dicom``).

    Returns:
        A ``tf.data.Dataset`` yielding ``images`` float32 (B, S, S, 3) in [0, 255] and
        ``labels`` float32 (B,).

    Raises:
        DataError: the split is empty, or a file is too large or cannot be decoded (named).
    """
    if len(paths) != len(labels):
        raise ValueError(
            f"paths and labels must have the same length, but got {len(paths)} and {len(labels)}"
        )
    if len(paths) == 0:
        raise DataError("no images to build a dataset from (the split is empty)")
    if image_size < 1 or batch_size < 1:
        raise ValueError(
            f"`image_size >= 1` and `batch_size >= 1` must hold, but got {image_size}, {batch_size}"
        )
    files = [str(p) for p in paths]
    if any(is_dicom_file(f) for f in files):
        images = decode_images(
            files, image_size, max_pixels=max_pixels, memory_bytes=memory_bytes, dicom=dicom
        )
        return make_array_dataset(
            images, labels, batch_size=batch_size, shuffle=shuffle, seed=seed, repeat=repeat
        )
    parallel = decode_parallelism(check_headers(files, max_pixels), memory_bytes)

    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    names = tf.constant(files, dtype=tf.string)
    targets = tf.constant(np.asarray(labels, dtype=np.float32))
    ds = tf.data.Dataset.from_tensor_slices((names, targets))
    ds = ds.map(
        lambda p, y: (_decode_resize(p, image_size), y),
        num_parallel_calls=parallel,
        deterministic=True,
    )
    if cache:
        ds = ds.cache()
    if shuffle:
        # A buffer as large as the dataset gives a full shuffle; the cache holds uint8 images.
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


class EpochOrder:
    """The order of one epoch's training images: a seeded permutation of (seed, epoch) alone.

    With ``sides`` (one image side per epoch: progressive resizing, a resolution fidelity's
    rungs), it also says the size each epoch's images are served at; like the order, the size
    is a function of the epoch alone, so a resumed trial continues at its schedule's size.

    ``tf.data``'s ``shuffle(reshuffle_each_iteration=True)`` draws each epoch's order from a
    generator that advances once per pass, so a process that resumes a trial at epoch k would
    replay epoch 0's order. Here epoch ``e``'s order depends on ``seed`` and ``e`` only:
    whoever runs epoch ``e`` sets :attr:`epoch` before its first batch (a Keras callback's
    ``on_epoch_begin``), and a resumed trial sees the batches the uninterrupted one saw.

    Args:
        size: rows to order.
        seed: the trial's seed.
        batch_size: rows per batch (the last batch may be smaller).
    """

    def __init__(self, size: int, seed: int, batch_size: int, sides: Sequence[int] | None = None) -> None:
        if size < 1 or batch_size < 1:
            raise ValueError(f"`size >= 1` and `batch_size >= 1` must hold, but got {size}, {batch_size}")
        if sides is not None and (not sides or min(sides) < 1):
            raise ValueError(f"`sides` must be positive image sides, one per epoch, but got {list(sides)}")
        self.size = int(size)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.sides = [int(s) for s in sides] if sides is not None else None
        self.epoch = 0

    def side(self, epoch: int | None = None) -> int | None:
        """The image side epoch ``epoch`` (default: the current one) is served at; None: as stored.

        Epochs past the schedule keep its last side, so a longer training stays at full size.
        """
        if self.sides is None:
            return None
        e = self.epoch if epoch is None else int(epoch)
        return self.sides[min(max(e, 0), len(self.sides) - 1)]

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch (the last may be smaller)."""
        return -(-self.size // self.batch_size)

    def permutation(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s order of the positions ``0..size-1``."""
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.size)

    def batches(self) -> Iterable[np.ndarray]:
        """The positions of each batch of the current :attr:`epoch`, batch by batch."""
        order = self.permutation(self.epoch)
        for start in range(0, self.size, self.batch_size):
            yield order[start : start + self.batch_size]


def make_array_dataset(
    images: np.ndarray,
    labels: Sequence[float] | np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    rows: Sequence[int] | np.ndarray | None = None,
    repeat: bool = False,
    order: EpochOrder | None = None,
    sides_from: EpochOrder | None = None,
) -> tf.data.Dataset:
    """A batched dataset of ``(images, labels)`` over decoded images (uint8, or float32 from DICOM).

    It yields what :func:`make_dataset` yields for the same files, batch for batch: the order
    is a seeded shuffle of the row numbers, which is the permutation the file-based pipeline
    draws with the same seed and length. Each batch is gathered from ``images`` in one call, so
    a memory-mapped cache file is read batch by batch and never copied whole.

    Args:
        images: uint8 or float32 ``(N, S, S, 3)``, e.g. :func:`clot_hpo.data.cache.decoded_images`.
        labels: one label per image (0/1).
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch (seeded, so a run is reproducible).
        seed: shuffle seed.
        rows: use only these rows of ``images``, in this order (default: all).
        repeat: repeat forever (use with ``steps_per_epoch``).
        order: each pass's order comes from ``order`` (its ``epoch`` set by the caller before
            each pass, see :class:`EpochOrder`) instead of ``tf.data``'s per-pass reshuffle;
            ``shuffle`` and ``seed`` are then unused. An order with ``sides`` also sets each
            pass's image side.
        sides_from: an :class:`EpochOrder` whose current side each pass is served at, the rows
            in their stored order (a validation split following the training's sizes).

    Returns:
        A ``tf.data.Dataset`` yielding ``images`` float32 (B, S, S, 3) in [0, 255] and
        ``labels`` float32 (B,). A pass at another side than the stored one is resized from
        the stored images on the fly (decoded once at full size, bilinear with antialiasing
        as when decoding); then S is the pass's side and the shape's S is left unknown.
    """
    import tensorflow as tf

    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype not in (np.uint8, np.float32):
        raise ValueError(
            f"images must be uint8 or float32 (N, S, S, 3), but got {images.dtype} {images.shape}"
        )
    dtype = tf.as_dtype(images.dtype)
    targets = np.asarray(labels, dtype=np.float32)
    if len(targets) != len(images):
        raise ValueError(
            f"images and labels must have the same length, but got {len(images)} and {len(targets)}"
        )
    if batch_size < 1:
        raise ValueError(f"`batch_size >= 1` must hold, but got {batch_size}")
    index = np.arange(len(images), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(index) == 0:
        raise DataError("no images to build a dataset from (the split is empty)")
    size = int(images.shape[1])

    def gather(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        picked = index[positions]
        return np.ascontiguousarray(images[picked]), targets[picked]

    def load(positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(gather, [positions], (dtype, tf.float32), stateful=False)
        x.set_shape([None, size, size, 3])
        y.set_shape([None])
        return tf.cast(x, tf.float32), y

    def load_at(positions: tf.Tensor, side: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = load(positions)
        # Resizing is no augmentation: every image of a pass gets the same, deterministic size.
        x = tf.cond(
            tf.equal(side, size),
            lambda: x,
            lambda: tf.image.resize(x, tf.stack([side, side]), method="bilinear", antialias=True),
        )
        x.set_shape([None, None, None, 3])
        return x, y

    sized = sides_from if sides_from is not None else order
    if sized is not None and sized.sides is not None:
        if order is not None:
            _check_order(order, len(index), batch_size)
        batches_per_pass = -(-len(index) // batch_size) if order is None else order.batches_per_epoch

        def sized_batches() -> Iterable[tuple[np.ndarray, np.int32]]:
            side = np.int32(sized.side() or size)  # read when the pass starts: its epoch is set
            if order is not None:
                for positions in order.batches():
                    yield positions, side
                return
            for start in range(0, len(index), batch_size):
                yield np.arange(start, min(start + batch_size, len(index)), dtype=np.int64), side

        pairs = tf.data.Dataset.from_generator(
            sized_batches,
            output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([], tf.int32)),
        )
        pairs = pairs.apply(tf.data.experimental.assert_cardinality(batches_per_pass))
        if repeat:
            pairs = pairs.repeat()
        ds = pairs.map(load_at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    if order is not None:
        _check_order(order, len(index), batch_size)
        positions = tf.data.Dataset.from_generator(
            order.batches, output_signature=tf.TensorSpec([None], tf.int64)
        )
        # Known length: Keras sizes its epoch (and the BatchNorm momentum) from it.
        positions = positions.apply(tf.data.experimental.assert_cardinality(order.batches_per_epoch))
        if repeat:
            positions = positions.repeat()
        ds = positions.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = tf.data.Dataset.range(len(index))
    if shuffle:
        ds = ds.shuffle(len(index), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _check_order(order: EpochOrder, rows: int, batch_size: int) -> None:
    if order.size != rows or order.batch_size != batch_size:
        raise ValueError(
            f"the epoch order must cover {rows} rows in batches of {batch_size}, but got "
            f"{order.size} rows in batches of {order.batch_size}"
        )


def decode_images(
    paths: Sequence[str | Path],
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * 2**20,
    dicom: DicomSettings | None = None,
) -> np.ndarray:
    """Decode and resize images exactly as :func:`make_dataset` does: the data layer's one decoder.

    Every file's header is read first: one that declares more than ``max_pixels`` pixels
    (or a DICOM file with an unusable frame or transfer syntax, or no image) is refused
    before anything is decoded, and only as many files are decoded at once as
    ``memory_bytes`` holds of the largest. PNG/JPEG go through TensorFlow, DICOM through
    :func:`clot_hpo.data.dicom.decode_dicom` with ``dicom``'s window and frame.

    Returns:
        uint8 array (N, S, S, 3); float32 in [0, 255] when any file is DICOM.

    Raises:
        DataError: some files are too large or cannot be decoded; the message names them.
    """
    if len(paths) == 0:
        return np.zeros((0, image_size, image_size, 3), dtype=np.uint8)
    files = [str(p) for p in paths]
    headers = check_headers(files, max_pixels, dicom)
    parallel = decode_parallelism(headers, memory_bytes)
    dicom_rows = [i for i, h in enumerate(headers) if h.format == "DICOM"]
    if dicom_rows:
        return _decode_with_dicom(files, headers, dicom_rows, image_size, max_pixels, memory_bytes, dicom)
    return _decode_with_tensorflow(files, image_size, parallel)


def _decode_with_dicom(
    files: list[str],
    headers: list[Header],
    dicom_rows: list[int],
    image_size: int,
    max_pixels: int,
    memory_bytes: int,
    dicom: DicomSettings | None,
) -> np.ndarray:
    """float32 (N, S, S, 3): DICOM rows from pydicom, the others from TensorFlow."""
    out = np.zeros((len(files), image_size, image_size, 3), dtype=np.float32)
    others = sorted(set(range(len(files))) - set(dicom_rows))
    if others:
        parallel = decode_parallelism([headers[i] for i in others], memory_bytes)
        out[others] = _decode_with_tensorflow([files[i] for i in others], image_size, parallel)
    budget = MemoryBudget(memory_bytes)

    def one(i: int) -> np.ndarray | str:
        with budget.hold(headers[i].decode_bytes()):
            try:
                pixels, _ = decode_dicom(files[i], settings=dicom, max_pixels=max_pixels)
            except DicomRefused as exc:
                return f"{files[i]}: {exc.reason}"
        return resize_pixels(pixels, image_size)

    bad = []
    workers = decode_parallelism([headers[i] for i in dicom_rows], memory_bytes)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clot-hpo-dicom") as pool:
        for i, result in zip(dicom_rows, pool.map(one, dicom_rows), strict=True):
            if isinstance(result, str):
                bad.append(result)
            else:
                out[i] = result
    if bad:
        raise DataError(f"{len(bad)} unusable image(s): {format_offenders(bad)}")
    return out


def _decode_with_tensorflow(files: list[str], image_size: int, parallel: int) -> np.ndarray:
    """uint8 (N, S, S, 3) of PNG/JPEG files, decoded by ``tf.data`` ``parallel`` at a time."""
    import tensorflow as tf

    ds = (
        tf.data.Dataset.from_tensor_slices(tf.constant(files, dtype=tf.string))
        .map(lambda p: _decode_resize(p, image_size), num_parallel_calls=parallel, deterministic=True)
        .batch(256)
    )
    try:
        batches = [b.numpy() for b in ds]
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError) as exc:
        _raise_for_bad_files(files, exc)
    return np.concatenate(batches)


def load_image_batch(
    paths: Sequence[str | Path],
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dicom: DicomSettings | None = None,
) -> np.ndarray:
    """Decode and resize images exactly as :func:`make_dataset` does (for predict/evaluate).

    Returns:
        float32 array (N, S, S, 3) with pixels in [0, 255].

    Raises:
        DataError: some files are too large (``max_pixels``, checked before decoding) or
            cannot be decoded; the message names them.
    """
    return decode_images(paths, image_size, max_pixels=max_pixels, dicom=dicom).astype(np.float32)


def _raise_for_bad_files(files: list[str], exc: Exception) -> None:
    """Name the files TensorFlow could not decode (its own error names none)."""
    from clot_hpo.data.validate import inspect_image

    bad = []
    for f in files:
        info = inspect_image(f)
        if not info.ok:
            bad.append(f"{f}: {info.error}")
    if bad:
        raise DataError(f"{len(bad)} unusable image(s): {format_offenders(bad)}") from exc
    message = first_line(getattr(exc, "message", exc))
    raise DataError(f"cannot decode the images: {message}") from exc


def list_images(paths_or_dirs: Iterable[str | Path]) -> list[Path]:
    """Image files (PNG/JPEG/DICOM) among the given files and, recursively, folders.

    A DICOM file counts by its suffix (``.dcm``, ``.dicom``) or by its ``DICM`` mark.

    Returns:
        Sorted, de-duplicated paths.

    Raises:
        DataError: a path does not exist, a file given by name is not PNG/JPEG/DICOM, a file
            has a name that is not UTF-8, or no image was found at all.
    """
    found: set[Path] = set()
    problems = []
    given = [Path(p) for p in paths_or_dirs]
    for path in given:
        if path.is_dir():
            for p in path.rglob("*"):
                if not p.is_file():
                    continue
                if is_image_file(p) and not has_utf8_name(p):
                    problems.append(non_utf8_message(p))
                elif is_image_file(p):
                    found.add(p)
        elif path.is_file():
            if not has_utf8_name(path):
                problems.append(non_utf8_message(path))
            elif is_image_file(path) or is_dicom_file(path):
                found.add(path)
            else:
                problems.append(f"{path}: not a PNG/JPEG/DICOM file")
        else:
            problems.append(f"{path}: not found")
    if problems:
        raise DataError(format_offenders(sorted(problems)))
    if not found:
        raise DataError(
            f"no PNG/JPEG/DICOM images found in {', '.join(str(p) for p in given) or '(nothing given)'}"
        )
    return sorted(found)
