"""Check every image before any compute is spent, and hash it for the leakage report.

Each file is read once: its bytes are hashed (sha256, for the dataset digest), its header's
width x height is checked against ``data.max_pixels`` (nothing is decoded above it), then it
is decoded by Pillow twice, first with ``verify()`` (structure and checksums) and then with a
full ``load()``, which is what catches truncated files. A DICOM file (by name or its ``DICM``
mark) is read by :mod:`clot_hpo.data.dicom` instead: header budget, frame and transfer syntax
first, then the decode training does. The pixels training decodes (8-bit
RGB; 16-bit samples keep their high byte, as TensorFlow's ``decode_image`` does) give an
exact-content hash and a perceptual hash (``imagehash.phash``) for near-duplicates. Decodes
run in threads within a memory budget (:class:`~clot_hpo.data.limits.MemoryBudget`). Results are cached in
a CSV keyed by relpath, size and modification time, so a rerun on 20k unchanged images only
stats the files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from clot_hpo.data.dicom import DicomRefused, DicomSettings, decode_dicom
from clot_hpo.data.limits import (
    DEFAULT_DECODE_MEMORY_MB,
    DEFAULT_MAX_PIXELS,
    Header,
    MemoryBudget,
    dicom_header,
    is_dicom_bytes,
    is_dicom_name,
    pixel_limit_message,
)
from clot_hpo.data.scan import format_offenders
from clot_hpo.errors import DataError

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG"})
CACHE_NAME = "image_index.csv"
_CACHE_VERSION = "3"  # 2: 16-bit pixels hashed as training decodes them; pixel limits; 3: DICOM
_TOO_MANY_PIXELS = "too many pixels"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@dataclass(frozen=True)
class ImageInfo:
    """What inspecting one image file found.

    Attributes:
        relpath: path relative to the data folder (the cache key, with size and mtime).
        size: file size in bytes.
        mtime_ns: modification time in nanoseconds.
        sha256: hash of the file's bytes ("" when unreadable).
        pixel_sha256: hash of the decoded RGB pixels and their shape: equal for the same
            picture saved twice or in another PNG encoding ("" when undecodable).
        phash: 64-bit perceptual hash as 16 hex digits ("" when undecodable).
        width: width in pixels (0 when undecodable).
        height: height in pixels (0 when undecodable).
        mode: Pillow mode (``L``, ``RGB``, ``RGBA``...), or a DICOM file's photometric
            interpretation (``MONOCHROME2``, ``RGB``...).
        format: ``PNG``, ``JPEG`` or ``DICOM`` ("" when undecodable).
        error: why the file is unusable; "" when it is fine.
    """

    relpath: str
    size: int
    mtime_ns: int
    sha256: str = ""
    pixel_sha256: str = ""
    phash: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the image decoded completely."""
        return not self.error


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def training_pixels(image: Image.Image) -> np.ndarray:
    """The uint8 ``(H, W, 3)`` pixels the training pipeline decodes from this image.

    TensorFlow's ``decode_image(channels=3, dtype=uint8)`` keeps the high byte of 16-bit
    samples; Pillow's ``convert("RGB")`` would clip them at 255 instead, which made two
    different 16-bit scans hash as identical white pictures.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.int64)
        eight = np.clip(wide >> 8, 0, 255).astype(np.uint8)
        return np.repeat(eight[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _hashes(pixels: np.ndarray) -> tuple[str, str]:
    """The exact-content hash and the perceptual hash of decoded ``(H, W, 3)`` pixels."""
    import imagehash

    # uint8 pixels keep the prefix they always had; a DICOM image's floats name their type.
    kind = "" if pixels.dtype == np.uint8 else f"{pixels.dtype.str}:"
    digest = hashlib.sha256(f"{pixels.shape[1]}x{pixels.shape[0]}:{kind}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    eight = pixels if pixels.dtype == np.uint8 else np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return digest.hexdigest(), str(imagehash.phash(Image.fromarray(eight)))


def _inspect_dicom(
    data: bytes, base: ImageInfo, max_pixels: int, budget: MemoryBudget | None, settings: DicomSettings
) -> ImageInfo:
    """A DICOM file's check: header budget, frame and syntax first, then the full decode."""
    try:
        header = dicom_header(data, max_pixels, settings)
        with budget.hold(header.decode_bytes()) if budget is not None else nullcontext():
            pixels, _ = decode_dicom(data, settings=settings, max_pixels=max_pixels)
    except DicomRefused as exc:
        return replace(base, format="DICOM", error=exc.reason)
    return _decoded(base, pixels, header)


def _decoded(base: ImageInfo, pixels: np.ndarray, header: Header) -> ImageInfo:
    """``base`` with a decoded image's hashes and its header's size, mode and format."""
    pixel_sha, phash = _hashes(pixels)
    return replace(
        base,
        pixel_sha256=pixel_sha,
        phash=phash,
        width=header.width,
        height=header.height,
        mode=header.mode,
        format=header.format,
    )


def inspect_image(
    path: str | Path,
    relpath: str | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: MemoryBudget | None = None,
    dicom: DicomSettings | None = None,
) -> ImageInfo:
    """Read, check the declared size, verify, fully decode and hash one image; never raises for a bad file.

    Args:
        path: the file.
        relpath: the key stored in :attr:`ImageInfo.relpath` (default: ``str(path)``).
        max_pixels: largest width x height decoded; a larger image is refused from its header.
        budget: memory the decode waits for (None: decode at once).
        dicom: how a DICOM file is windowed and which frame is used (``data.dicom``).
    """
    path = Path(path)
    relpath = str(path) if relpath is None else relpath
    try:
        stat = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        return ImageInfo(relpath, 0, 0, error=f"unreadable: {exc.strerror or _first_line(exc)}")
    base = ImageInfo(relpath, stat.st_size, stat.st_mtime_ns)
    if not data:
        return replace(base, error="empty file")
    base = replace(base, sha256=hashlib.sha256(data).hexdigest())
    if is_dicom_bytes(data) or is_dicom_name(path):
        return _inspect_dicom(data, base, max_pixels, budget, dicom or DicomSettings())
    try:
        with Image.open(io.BytesIO(data)) as probe:  # lazy: only the header is read
            fmt = probe.format or ""
            header = Header(probe.width, probe.height, probe.mode, fmt)
            if fmt not in SUPPORTED_FORMATS:
                return replace(
                    base, format=fmt, error=f"unsupported format {fmt or 'unknown'} (PNG or JPEG expected)"
                )
            if header.pixels > max_pixels:
                return replace(
                    base,
                    width=header.width,
                    height=header.height,
                    mode=header.mode,
                    format=fmt,
                    error=pixel_limit_message(header, max_pixels),
                )
            probe.verify()
        # verify() leaves the image unusable and does not decode pixel data; a full load() is
        # what detects a truncated file (Pillow's LOAD_TRUNCATED_IMAGES stays False).
        with (
            budget.hold(header.decode_bytes()) if budget is not None else nullcontext(),
            Image.open(io.BytesIO(data)) as img,
        ):
            img.load()
            return _decoded(base, training_pixels(img), header)
    except UnidentifiedImageError:
        return replace(base, error="not an image (unknown or damaged header)")
    except Image.DecompressionBombError as exc:
        return replace(base, error=f"{_TOO_MANY_PIXELS}: {_first_line(exc)}")
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow reports damaged data with all of these (SyntaxError from PNG chunk parsing).
        reason = _first_line(exc)
        if "truncated" in reason.lower():
            return replace(base, error=f"truncated: {reason}")
        return replace(base, error=f"corrupt: {reason}")


# ----- cache ------------------------------------------------------------------------------
_FIELDS = [f.name for f in fields(ImageInfo)]
_INT_FIELDS = {"size", "mtime_ns", "width", "height"}


def _version_line(dicom: DicomSettings | None) -> str:
    # DICOM pixels (and so their hashes) depend on the window and frame settings.
    return f"# clot-hpo image index v{_CACHE_VERSION} dicom {(dicom or DicomSettings()).tag()}"


def load_cache(path: Path | None, dicom: DicomSettings | None = None) -> dict[str, ImageInfo]:
    """Read an image-index cache; a missing, old or damaged cache (or other DICOM settings) is empty."""
    if path is None or not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            version = fh.readline().strip()
            if version != _version_line(dicom):
                return {}
            reader = csv.DictReader(fh)
            if reader.fieldnames != _FIELDS:
                return {}
            out: dict[str, ImageInfo] = {}
            for row in reader:
                values: dict[str, Any] = {k: (int(v) if k in _INT_FIELDS else v) for k, v in row.items()}
                out[values["relpath"]] = ImageInfo(**values)
            return out
    except (OSError, ValueError, TypeError, csv.Error) as exc:
        log.warning("%s: ignoring an unreadable hash cache (%s)", path, _first_line(exc))
        return {}


def save_cache(path: Path, infos: Sequence[ImageInfo], dicom: DicomSettings | None = None) -> None:
    """Write the image-index cache atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        fh.write(_version_line(dicom) + "\n")
        writer = csv.DictWriter(fh, fieldnames=_FIELDS, lineterminator="\n")
        writer.writeheader()
        for info in infos:
            writer.writerow(asdict(info))
    os.replace(tmp, path)


def _still_valid(cached: ImageInfo | None, path: str, max_pixels: int) -> bool:
    if cached is None:
        return False
    if cached.error.startswith(_TOO_MANY_PIXELS) or cached.width * cached.height > max_pixels:
        return False  # checked under another limit: check again (from the header: cheap)
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_size == cached.size and stat.st_mtime_ns == cached.mtime_ns


def default_workers() -> int:
    """Threads for inspection: Pillow's decoders and hashlib release the GIL."""
    return max(1, min(8, (os.cpu_count() or 1) * 2))


def inspect_images(
    paths: Sequence[str],
    relpaths: Sequence[str],
    *,
    cache_path: Path | None = None,
    workers: int | None = None,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * 2**20,
    dicom: DicomSettings | None = None,
) -> list[ImageInfo]:
    """Inspect many images in parallel, reusing cached results of unchanged files.

    Args:
        paths: absolute file paths.
        relpaths: the matching cache keys.
        cache_path: the cache CSV to read and update (None: no cache).
        workers: threads (default :func:`default_workers`).
        progress: show a progress bar on stderr.
        max_pixels: largest width x height decoded (see :func:`inspect_image`).
        memory_bytes: what the images decoded at once may take together: threads wait for
            it, so a folder of large scans is not decoded eight at a time.
        dicom: DICOM window and frame settings (``data.dicom``).

    Returns:
        One :class:`ImageInfo` per path, in order.
    """
    cache = load_cache(cache_path, dicom)
    results: list[ImageInfo | None] = [None] * len(paths)
    todo = []
    for i, (path, rel) in enumerate(zip(paths, relpaths, strict=False)):
        cached = cache.get(rel)
        if _still_valid(cached, path, max_pixels):
            results[i] = cached
        else:
            todo.append(i)
    budget = MemoryBudget(memory_bytes)
    if todo:
        log.debug("inspecting %d image(s), %d from cache", len(todo), len(paths) - len(todo))
        _run_parallel(
            todo,
            lambda i: inspect_image(paths[i], relpaths[i], max_pixels=max_pixels, budget=budget, dicom=dicom),
            results,
            workers=workers or default_workers(),
            progress=progress,
        )
    final = [r for r in results if r is not None]
    if cache_path is not None and (todo or len(cache) != len(final)):
        save_cache(cache_path, final, dicom)
    return final


def _run_parallel(
    todo: list[int],
    work: Callable[[int], ImageInfo],
    results: list[ImageInfo | None],
    *,
    workers: int,
    progress: bool,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from clot_hpo.data.console import show_progress, stderr_console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(
        *columns, console=stderr_console(), disable=not show_progress(progress), transient=True
    ) as bar:
        task = bar.add_task("checking images", total=len(todo))
        if workers == 1 or len(todo) < 32:
            for i in todo:
                results[i] = work(i)
                bar.advance(task)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clot-hpo-inspect") as pool:
            for i, info in zip(todo, pool.map(work, todo), strict=False):
                results[i] = info
                bar.advance(task)


# ----- validation -------------------------------------------------------------------------
@dataclass
class ValidationResult:
    """The usable images (with their hashes) and what was skipped.

    Attributes:
        frame: the input rows whose images decoded, with columns ``sha256``,
            ``pixel_sha256``, ``phash``, ``width``, ``height``, ``mode`` added.
        skipped: ``(path, reason)`` of every image left out (only with ``skip_corrupt``).
    """

    frame: pd.DataFrame
    skipped: list[tuple[str, str]]


def validate_images(
    frame: pd.DataFrame,
    *,
    skip_corrupt: bool = False,
    cache_path: Path | None = None,
    workers: int | None = None,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * 2**20,
    dicom: DicomSettings | None = None,
) -> ValidationResult:
    """Refuse (or skip) every image that cannot be read completely.

    Args:
        frame: rows of :func:`clot_hpo.data.scan.scan_dataset` (``path``, ``relpath``...).
        skip_corrupt: drop bad images (each is logged as a warning and returned) instead of
            raising.
        cache_path: image-index cache (see :func:`inspect_images`).
        workers: threads.
        progress: show a progress bar on stderr.
        max_pixels: largest width x height decoded (``data.max_pixels``).
        memory_bytes: memory budget of the decodes in flight (``data.decode_memory_mb``).
        dicom: DICOM window and frame settings (``data.dicom``).

    Raises:
        DataError: some images are unreadable, corrupt, truncated, too large or (DICOM) in
            a transfer syntax no installed package decodes, and ``skip_corrupt`` is off; the
            message names them.
    """
    infos = inspect_images(
        list(frame["path"]),
        list(frame["relpath"]),
        cache_path=cache_path,
        workers=workers,
        progress=progress,
        max_pixels=max_pixels,
        memory_bytes=memory_bytes,
        dicom=dicom,
    )
    bad = [(row_path, info) for row_path, info in zip(frame["path"], infos, strict=False) if not info.ok]
    if bad and not skip_corrupt:
        listed = [f"{info.relpath}: {info.error}" for _, info in bad]
        raise DataError(
            f"{len(bad)} unusable image(s): {format_offenders(listed)} "
            "(fix or remove them, or pass --skip-corrupt / set data.skip_corrupt: true to skip them)"
        )
    skipped = [(path, info.error) for path, info in bad]
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    keep = [info.ok for info in infos]
    out = frame.loc[keep].copy()
    good = [info for info in infos if info.ok]
    for name in ("sha256", "pixel_sha256", "phash", "width", "height", "mode", "format"):
        out[name] = [getattr(info, name) for info in good]
    return ValidationResult(frame=out.reset_index(drop=True), skipped=skipped)
