"""The data layer's trust boundaries: the data root, file names, formats and pixel limits.

Every image path is resolved and must lie inside the data folder (the *data root*) unless the
user says otherwise (``data.allow_outside_root``): an absolute path, a ``../`` or a symbolic
link leaving the root could otherwise train on, and write the name of, any file the process
can read. A file's declared width x height is read from its header (Pillow's ``Image.open``
is lazy) and compared with ``data.max_pixels`` *before* any decode, so a small file that
declares 12000 x 12000 pixels (a decompression bomb) costs nothing. Decoders run within a
memory budget (:class:`MemoryBudget`) rather than one image per core, because one large
image can take hundreds of megabytes while it is decoded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from clot_hpo.config.schema import DataConfig
from clot_hpo.data.dicom import (
    DicomHeader,
    DicomRefused,
    DicomSettings,
    check_dicom_header,
    read_dicom_header,
)
from clot_hpo.errors import DataError

DEFAULT_MAX_PIXELS: int = DataConfig.model_fields["max_pixels"].default
"""Largest width x height accepted, 50 million (about 7000 x 7000): far above the scans the
product trains on, far below a bomb. Pillow's own warning starts at 89 million pixels and its
error at twice that. ``data.max_pixels`` in the config (the one place it is defined)."""

DEFAULT_DECODE_MEMORY_MB: int = DataConfig.model_fields["decode_memory_mb"].default
"""Memory that images being decoded at the same time may take together (estimated)."""

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_DICOM_MAGIC_OFFSET = 128  # the DICOM preamble is 128 bytes, then "DICM"

# Bytes per pixel of each Pillow mode as decoded (before the RGB copy training makes).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
_MODE_BYTES.update({"RGBA": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4})
_MODE_BYTES.update({"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2})


def display_name(path: str | Path) -> str:
    """``path`` as text that can always be printed: non-UTF-8 bytes shown as a bytes literal."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # os.listdir hands undecodable bytes over as lone surrogates (PEP 383); printing those
        # raises, so the name is shown as the bytes it is on disk.
        return repr(os.fsencode(text))
    return text


def has_utf8_name(path: str | Path) -> bool:
    """Whether ``path`` is valid UTF-8 text (file systems allow any bytes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def non_utf8_message(path: str | Path) -> str:
    """The sentence that refuses a file whose name is not UTF-8."""
    return (
        f"{display_name(path)}: the file name is not valid UTF-8 (rename the file: names are written "
        "to manifests and reports as UTF-8 text)"
    )


def is_dicom_name(path: str | Path) -> bool:
    """Whether ``path`` has a DICOM suffix (``.dcm``, ``.dicom``)."""
    return Path(path).suffix.lower() in DICOM_SUFFIXES


def is_dicom_bytes(head: bytes) -> bool:
    """Whether a file starting with ``head`` is DICOM (the ``DICM`` magic at offset 128)."""
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is named or made like a DICOM file (an unreadable file is not)."""
    if is_dicom_name(path):
        return True
    try:
        with open(path, "rb") as fh:
            return is_dicom_bytes(fh.read(_DICOM_MAGIC_OFFSET + 4))
    except OSError:
        return False


def outside_root_message(shown: str, path: str | Path, root: str | Path) -> str:
    """The sentence that refuses a path leaving the data root."""
    resolved = Path(path).resolve()
    how = "a link that leads" if Path(path).is_symlink() else "it resolves to"
    return (
        f"{shown}: outside the data folder {Path(root).resolve()} ({how} {display_name(resolved)}); "
        "images must lie inside it (set data.allow_outside_root: true or pass --allow-outside-root "
        "to allow it)"
    )


@dataclass(frozen=True)
class Header:
    """What an image file's header declares, read without decoding any pixel."""

    width: int
    height: int
    mode: str
    format: str
    frames: int = 1
    decode_need: int = 0  # bytes, when the format's reader estimated them (DICOM)

    @property
    def pixels(self) -> int:
        """Width x height (x frames, for a multi-frame DICOM file)."""
        return self.width * self.height * self.frames

    def decode_bytes(self) -> int:
        """Estimated peak memory of decoding this image and converting it to RGB."""
        if self.decode_need:
            return self.decode_need
        return self.pixels * (_MODE_BYTES.get(self.mode, 8) + 3 + 3)


def dicom_header(source: str | Path | BinaryIO | bytes, max_pixels: int, settings: DicomSettings) -> Header:
    """A DICOM file's :class:`Header`, refused when over ``max_pixels``, on an unusable frame or syntax.

    Raises:
        DicomRefused: the sentence naming what is wrong (without the file's name).
    """
    info = read_dicom_header(source)
    check_dicom_header(info, max_pixels, settings)
    return _as_header(info)


def _as_header(info: DicomHeader) -> Header:
    """A DICOM header as the :class:`Header` every format shares (width = columns)."""
    return Header(
        info.columns,
        info.rows,
        info.photometric,
        "DICOM",
        frames=info.frames,
        decode_need=info.decode_bytes(),
    )


def read_header(source: str | Path | BinaryIO) -> Header:
    """The declared size, mode and format of an image (only the header is read).

    Pillow reads a PNG/JPEG header; a DICOM file (by name or its ``DICM`` mark) is read by
    pydicom without its pixel data, so a caller sizing a memory budget sees its frames and
    bit depth too.

    Raises:
        PIL.UnidentifiedImageError, OSError, PIL.Image.DecompressionBombError: as
            ``Image.open`` does; callers turn them into their own messages.
        DicomRefused: a DICOM file whose header declares no image or cannot be read.
    """
    from PIL import Image

    if _looks_like_dicom(source):
        return _as_header(read_dicom_header(source))
    with Image.open(source) as image:
        width, height = image.size
        return Header(int(width), int(height), image.mode, image.format or "")


def _looks_like_dicom(source: str | Path | BinaryIO) -> bool:
    if isinstance(source, str | Path):
        return is_dicom_file(source)
    start = source.tell()
    head = source.read(_DICOM_MAGIC_OFFSET + 4)
    source.seek(start)
    return is_dicom_bytes(head)


def pixel_limit_message(header: Header, max_pixels: int) -> str:
    """Why an image with ``header`` is refused (call only when it exceeds ``max_pixels``)."""
    return (
        f"too many pixels: `width x height <= {max_pixels:,}` (data.max_pixels) must hold, but the "
        f"header declares {header.width} x {header.height} = {header.pixels:,} (not decoded)"
    )


def check_headers(
    paths: Sequence[str | Path], max_pixels: int, dicom: DicomSettings | None = None
) -> list[Header]:
    """Read every file's header and refuse any over ``max_pixels``, before anything is decoded.

    A DICOM file (by name or by its ``DICM`` mark) is read by pydicom, without its pixel
    data: rows x columns x frames must fit ``max_pixels``, a multi-frame file needs
    ``dicom.frame``, and its transfer syntax needs an installed decoder.

    Returns:
        One :class:`Header` per path.

    Raises:
        DataError: some files declare too many pixels, cannot be decoded or have no readable
            image header; the message names them.
    """
    settings = dicom or DicomSettings()
    from PIL import Image, UnidentifiedImageError

    from clot_hpo.data.scan import format_offenders

    headers: list[Header] = []
    bad: list[str] = []
    for path in paths:
        name = display_name(path)
        if is_dicom_file(path):
            try:
                headers.append(dicom_header(path, max_pixels, settings))
            except DicomRefused as exc:
                bad.append(f"{name}: {exc.reason}")
            continue
        try:
            header = read_header(path)
        except Image.DecompressionBombError as exc:
            bad.append(f"{name}: too many pixels ({exc})")
            continue
        except UnidentifiedImageError:
            bad.append(f"{name}: not an image (unknown or damaged header)")
            continue
        except OSError as exc:
            bad.append(f"{name}: unreadable ({exc.strerror or exc})")
            continue
        if header.pixels > max_pixels:
            bad.append(f"{name}: {pixel_limit_message(header, max_pixels)}")
        headers.append(header)
    if bad:
        raise DataError(f"{len(bad)} unusable image(s): {format_offenders(bad)}")
    return headers


def decode_parallelism(headers: Sequence[Header], memory_bytes: int, cores: int | None = None) -> int:
    """Decoders to run at once: one per core, but never more than the largest image fits in memory."""
    cores = cores or os.cpu_count() or 1
    largest = max((h.decode_bytes() for h in headers), default=1)
    return max(1, min(cores, memory_bytes // max(largest, 1)))


class MemoryBudget:
    """A counting semaphore over bytes: decoders take what their image needs, then give it back.

    An image larger than the whole budget still runs, alone, so a limit set too low slows a
    dataset down instead of refusing it.

    Args:
        total: bytes the images in flight may take together.
    """

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError(f"`total >= 1` must hold, but got total={total}")
        self.total = total
        self._free = total
        self._cond = threading.Condition()
        self.peak = 0  # the most bytes ever held at once (for tests and benchmarks)

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Wait until ``nbytes`` (at most the whole budget) are free, hold them for the block."""
        need = min(max(int(nbytes), 0), self.total)
        with self._cond:
            self._cond.wait_for(lambda: self._free >= need)
            self._free -= need
            self.peak = max(self.peak, self.total - self._free)
        try:
            yield
        finally:
            with self._cond:
                self._free += need
                self._cond.notify_all()


__all__ = [
    "DEFAULT_DECODE_MEMORY_MB",
    "DEFAULT_MAX_PIXELS",
    "Header",
    "MemoryBudget",
    "check_headers",
    "decode_parallelism",
    "DICOM_SUFFIXES",
    "dicom_header",
    "display_name",
    "has_utf8_name",
    "is_dicom_bytes",
    "is_dicom_file",
    "is_dicom_name",
    "non_utf8_message",
    "outside_root_message",
    "pixel_limit_message",
    "read_header",
]
