"""DICOM files to pixels: a reader that keeps the header's metadata apart from the pixels.

As MONAI's ``LoadImage`` picks a reader per file, the data layer reads a DICOM file here and
any other image with Pillow/TensorFlow. What comes out of a DICOM file is float32 ``(H, W, 3)``
pixels in [0, 255] and a :class:`DicomHeader` that holds only what the decode needs (sizes,
bit depth, photometric interpretation, transfer syntax): no value that could identify a
patient. The one identifying value read, ``PatientID``, never leaves this module unsalted
(:func:`patient_group`).

The steps, in DICOM's order (PS3.3 C.11):

1. the pixel budget is checked from the header (rows x columns x frames, and the bytes of
   their stored bits) before any pixel is decoded;
2. one frame is decoded (a multi-frame file needs ``data.dicom.frame``), by pydicom and the
   pylibjpeg plugins for compressed transfer syntaxes;
3. grayscale: the modality rescale (slope/intercept or a modality LUT), then a window: the
   file's own VOI LUT or window centre/width when present, else ``data.dicom.window``, else
   the full range of the stored values; MONOCHROME1 is inverted afterwards;
4. colour: YBR becomes RGB (pydicom does it on decode), palette colour goes through its LUT.

The result stays floating point: no 8-bit rounding between the window and the model input.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from clot_hpo.config.schema import DicomConfig

Source = str | Path | bytes | BinaryIO

# The package a user installs to decode each compressed transfer syntax (pip names). pydicom
# itself decodes the uncompressed, deflated and RLE syntaxes.
_LIBJPEG = "pylibjpeg with pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg with pylibjpeg-openjpeg"
_PACKAGE_BY_SYNTAX = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG,  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": _LIBJPEG,  # JPEG Extended
    "1.2.840.10008.1.2.4.57": _LIBJPEG,  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": _LIBJPEG,  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": _LIBJPEG,  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": _LIBJPEG,  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": _OPENJPEG,  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": _OPENJPEG,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _OPENJPEG,  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": _OPENJPEG,  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": _OPENJPEG,  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg with pylibjpeg-rle (or pydicom's own RLE decoder)",
}
_VIDEO_PREFIXES = ("1.2.840.10008.1.2.4.10", "1.2.840.10008.1.2.4.11")  # MPEG-2/4, HEVC
_VIDEO_PACKAGE = (
    "none for pydicom 3.0 (PyAV or ffmpeg decode the video outside it: convert it to image frames)"
)
_NO_PIXELS = (
    "no pixel data (a DICOM file without an image: a report, an RT plan or structure set, "
    "a DICOMDIR or a waveform)"
)


class DicomRefused(ValueError):
    """A DICOM file that cannot become an image; ``reason`` is the sentence, without the file's name.

    The reason never quotes a header value that could identify anyone: only sizes, bit
    depths, the photometric interpretation and the transfer syntax.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DicomTooLarge(DicomRefused):
    """A DICOM file whose header declares more pixels than ``data.max_pixels`` allows."""


@dataclass(frozen=True)
class DicomSettings:
    """How pixels are windowed and which frame is taken (``data.dicom``)."""

    window: tuple[float, float] | None = None
    frame: int | None = None

    @classmethod
    def from_config(cls, cfg: DicomConfig | None) -> DicomSettings:
        """The settings of a config's ``data.dicom`` section (None: the defaults)."""
        if cfg is None:
            return cls()
        return cls(window=_center_width(cfg.window), frame=cfg.frame)

    @classmethod
    def from_args(cls, args: Any) -> DicomSettings:
        """The settings of a command's ``--dicom-window`` / ``--dicom-frame`` (absent: the defaults)."""
        return cls(
            window=_center_width(getattr(args, "dicom_window", None)),
            frame=getattr(args, "dicom_frame", None),
        )

    @classmethod
    def given_in(cls, args: Any) -> DicomSettings | None:
        """:meth:`from_args`, or None when the command was given neither option."""
        if getattr(args, "dicom_window", None) is None and getattr(args, "dicom_frame", None) is None:
            return None
        return cls.from_args(args)

    def as_metadata(self) -> dict[str, Any]:
        """These settings as JSON values, in ``data.dicom``'s shape (stored with a trained model)."""
        return {"window": None if self.window is None else list(self.window), "frame": self.frame}

    @classmethod
    def from_metadata(cls, value: Any) -> DicomSettings | None:
        """Settings :meth:`as_metadata` stored (None: nothing stored, or not in that shape)."""
        if not isinstance(value, dict):
            return None
        frame = value.get("frame")
        try:
            return cls(window=_center_width(value.get("window")), frame=None if frame is None else int(frame))
        except (TypeError, ValueError, IndexError):
            return None

    def describe(self) -> str:
        """These settings in words, for messages."""
        fallback = "the full range" if self.window is None else f"[center, width] {list(self.window)}"
        window = f"each file's own window, else {fallback}"
        frame = "single-frame files only" if self.frame is None else f"frame {self.frame}"
        return f"{window}, {frame}"

    def tag(self) -> str:
        """A short text naming these settings, for cache keys (the pixels depend on them)."""
        window = "file" if self.window is None else f"{self.window[0]:g},{self.window[1]:g}"
        return f"window={window};frame={'none' if self.frame is None else self.frame}"


def _center_width(value: Any) -> tuple[float, float] | None:
    """A ``[center, width]`` pair (a config's, a command line's, a model's metadata) as floats."""
    return None if value is None else (float(value[0]), float(value[1]))


def settings_for_model(
    given: DicomSettings | None, trained: DicomSettings | None
) -> tuple[DicomSettings, str | None]:
    """The DICOM settings to apply a model with, and a warning when they are not its training's.

    Args:
        given: the command's own (``--dicom-window`` / ``--dicom-frame``; None: neither given).
        trained: what the model was trained with, as stored with it (None: a model from
            before they were stored, or one logged elsewhere).

    A model applied to pixels windowed otherwise than in training is applied to other
    images than it was validated on: the command's settings still win (the user may know
    better, e.g. a scanner whose files carry no window), but not silently.
    """
    if given is None:
        return trained or DicomSettings(), None
    if trained is not None and given != trained:
        return given, (
            f"the model was trained on DICOM pixels with {trained.describe()}, but these settings "
            f"apply {given.describe()}: its probabilities on DICOM files are not the ones it was "
            "validated with"
        )
    return given, None


@dataclass(frozen=True)
class DicomHeader:
    """What a DICOM header declares about its pixels, and nothing about its patient."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    photometric: str
    transfer_syntax: str
    transfer_syntax_name: str

    @property
    def pixels(self) -> int:
        """Rows x columns x frames: every pixel the file declares."""
        return self.rows * self.columns * self.frames

    @property
    def stored_bytes(self) -> int:
        """Bytes of the declared pixel data once decompressed (every frame and sample)."""
        return self.pixels * self.samples * max(1, math.ceil(self.bits_allocated / 8))

    def decode_bytes(self) -> int:
        """Estimated peak memory of decoding one frame into float32 RGB (with working copies)."""
        frame = self.rows * self.columns
        return frame * self.samples * max(1, math.ceil(self.bits_allocated / 8)) + frame * 3 * 4 * 3

    def syntax(self) -> str:
        """The transfer syntax as a reader sees it: name and UID."""
        return f"transfer syntax {self.transfer_syntax_name} ({self.transfer_syntax})"


_QUIET: list[bool] = []


def _quiet_pydicom() -> None:
    """Keep pydicom from writing header values into warnings and log lines (once per process).

    Its value validation warns with the offending value quoted ("Invalid value for VR IS:
    '...'"), and it logs what it warns: a patient's name could reach a log line that way.
    """
    if _QUIET:
        return
    import logging

    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    logging.getLogger("pydicom").propagate = False
    _QUIET.append(True)


def _open(source: Source) -> str | Path | BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _read(source: Source, *, pixels: bool) -> Dataset:
    """The dataset (header only unless ``pixels``); raises :class:`DicomRefused` for a damaged one."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    _quiet_pydicom()
    try:
        # force: a `.dcm` file without the 128-byte preamble (no "DICM") is still DICOM.
        return dcmread(_open(source), force=True, stop_before_pixels=not pixels)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OverflowError) as exc:
        # The exception's text can quote raw header bytes: only its kind is shown.
        raise DicomRefused(
            f"damaged DICOM header ({type(exc).__name__}): transfer syntax unknown, pydicom cannot "
            "read the header"
        ) from None
    except OSError as exc:
        raise DicomRefused(f"unreadable ({exc.strerror or type(exc).__name__})") from None


def _transfer_syntax(ds: Dataset) -> tuple[str, str]:
    """The dataset's transfer syntax UID and name (inferred from the encoding when the file has none)."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None:
        implicit, little = getattr(ds, "original_encoding", (True, True))
        if implicit:
            uid = ImplicitVRLittleEndian
        else:
            uid = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        if meta is not None:
            ds.file_meta.TransferSyntaxUID = uid
    uid = UID(str(uid))
    name = uid.name if uid.is_valid else "unknown"
    return str(uid), name if name != str(uid) else "unknown"


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def header_of(ds: Dataset) -> DicomHeader:
    """The pixel-describing part of a dataset's header.

    Raises:
        DicomRefused: the file declares no image (no rows or columns).
    """
    uid, name = _transfer_syntax(ds)
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if rows < 1 or columns < 1:
        raise DicomRefused(f"{_NO_PIXELS}; transfer syntax {name} ({uid})")
    return DicomHeader(
        rows=rows,
        columns=columns,
        frames=max(1, _int(ds, "NumberOfFrames", 1)),
        samples=max(1, _int(ds, "SamplesPerPixel", 1)),
        bits_allocated=max(1, _int(ds, "BitsAllocated", 16)),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
        transfer_syntax=uid,
        transfer_syntax_name=name,
    )


def read_dicom_header(source: Source) -> DicomHeader:
    """The header of a DICOM file, read without its pixel data.

    Raises:
        DicomRefused: a damaged header, or no image in the file.
    """
    return header_of(_read(source, pixels=False))


def pixel_limit_reason(header: DicomHeader, max_pixels: int) -> str | None:
    """Why ``header`` is over the pixel budget (None when it is within it)."""
    if header.pixels <= max_pixels:
        return None
    return (
        f"too many pixels: `rows x columns x frames <= {max_pixels:,}` (data.max_pixels) must hold, "
        f"but the header declares {header.rows} x {header.columns} x {header.frames} = "
        f"{header.pixels:,} pixels of {header.bits_allocated} bits ({header.stored_bytes:,} bytes; "
        "not decoded)"
    )


def frame_reason(header: DicomHeader, settings: DicomSettings) -> str | None:
    """Why the configured frame cannot be taken from ``header``'s file (None: it can)."""
    if header.frames == 1:
        return None
    if settings.frame is None:
        return (
            f"a multi-frame DICOM ({header.frames} frames): set data.dicom.frame to the frame to use "
            "(0-based), or split the file into single frames"
        )
    if settings.frame >= header.frames:
        return (
            f"data.dicom.frame is {settings.frame}, but this file has {header.frames} frames "
            f"(0 to {header.frames - 1})"
        )
    return None


def check_dicom_header(header: DicomHeader, max_pixels: int, settings: DicomSettings) -> None:
    """Refuse a header over the pixel budget, with an unusable frame or an undecodable syntax.

    Raises:
        DicomRefused: the sentence naming what is wrong.
    """
    too_many = pixel_limit_reason(header, max_pixels)
    if too_many:
        raise DicomTooLarge(too_many)
    unusable_frame = frame_reason(header, settings)
    if unusable_frame:
        raise DicomRefused(unusable_frame)
    _check_decoder(header)


def _check_decoder(header: DicomHeader) -> None:
    from pydicom.pixels.decoders.base import get_decoder

    uid = header.transfer_syntax
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        decoder = None
    if decoder is not None and decoder.is_available:
        return
    if uid.startswith(_VIDEO_PREFIXES):
        package = _VIDEO_PACKAGE
    else:
        package = _PACKAGE_BY_SYNTAX.get(uid, "no Python package known to this tool")
    convert = "" if package == _VIDEO_PACKAGE else " (or convert the file to an uncompressed transfer syntax)"
    raise DicomRefused(
        f"cannot decode {header.syntax()}: no installed decoder; the package that decodes it: "
        f"{package}{convert}"
    )


def decode_dicom(
    source: Source, *, settings: DicomSettings | None = None, max_pixels: int
) -> tuple[np.ndarray, DicomHeader]:
    """A DICOM file's image as float32 ``(H, W, 3)`` in [0, 255], and its header.

    Args:
        source: a path, the file's bytes or an open binary file.
        settings: window and frame (``data.dicom``); default: the file's own window, else the
            full range, and single-frame files only.
        max_pixels: largest rows x columns x frames (``data.max_pixels``), checked first.

    Raises:
        DicomRefused: the file cannot become an image (the reason names the transfer syntax
            and the package that would decode it when that is the problem).
    """
    settings = settings or DicomSettings()
    header = read_dicom_header(source)
    check_dicom_header(header, max_pixels, settings)
    ds = _read(source, pixels=True)
    header = header_of(ds)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomRefused(f"{_NO_PIXELS}; {header.syntax()}")
    index = settings.frame if header.frames > 1 else None
    try:
        from pydicom.pixels.utils import pixel_array

        raw = pixel_array(ds, index=index)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's (named with its syntax)
        package = _PACKAGE_BY_SYNTAX.get(header.transfer_syntax, "pydicom")
        raise DicomRefused(
            f"the pixel data cannot be decoded ({type(exc).__name__}) with {header.syntax()} by "
            f"{package}: damaged or truncated pixel data"
        ) from None
    if header.frames > 1 and raw.ndim == (4 if header.samples > 1 else 3):
        raw = raw[0]  # a decoder that ignored `index` returned every frame
    return _to_display(raw, ds, header, settings), header


def _to_display(raw: np.ndarray, ds: Dataset, header: DicomHeader, settings: DicomSettings) -> np.ndarray:
    """Stored values -> float32 (H, W, 3) in [0, 255]."""
    photometric = header.photometric.upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels.processing import apply_color_lut

        rgb = np.asarray(apply_color_lut(raw, ds), dtype=np.float32)
        top = 255.0 if rgb.max(initial=0) <= 255 else 65535.0  # 8- or 16-bit palette entries
        palette: np.ndarray = np.clip(rgb * (255.0 / top), 0, 255).astype(np.float32)
        return palette
    if header.samples >= 3 or raw.ndim == 3:
        bits = max(1, min(_int(ds, "BitsStored", header.bits_allocated), 16))
        rgb = np.asarray(raw[..., :3], dtype=np.float32) * (255.0 / (2**bits - 1))
        colour: np.ndarray = np.clip(rgb, 0, 255).astype(np.float32)
        return colour
    gray = _window(raw, ds, settings)
    if photometric == "MONOCHROME1":  # stored inverted: low values are white
        gray = 255.0 - gray
    return np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32)


def _window(raw: np.ndarray, ds: Dataset, settings: DicomSettings) -> np.ndarray:
    """Modality rescale, then the VOI window, to float32 in [0, 255]."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2]) or 16
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        looked_up: np.ndarray = np.clip(out * (255.0 / (2**lut_bits - 1)), 0, 255).astype(np.float32)
        return looked_up
    own = _own_window(ds)
    if own is not None:
        center, width, function = own
    elif settings.window is not None:
        (center, width), function = settings.window, "LINEAR"
    else:
        low, high = _full_range(raw, ds)
        span = high - low if high > low else 1.0
        return np.clip((values - low) * (255.0 / span), 0, 255).astype(np.float32)
    return (_apply_window(values, center, width, function) * 255.0).astype(np.float32)


def _own_window(ds: Dataset) -> tuple[float, float, str] | None:
    """The file's first window centre and width (and its function), when it has a usable one."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None

    from pydicom.multival import MultiValue

    def first(value: Any) -> float:  # a window may be multi-valued: the first is the default
        return float(value[0]) if isinstance(value, MultiValue | list | tuple) else float(value)

    try:
        center, width = first(ds.WindowCenter), first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    return center, width, function


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """A window's output in [0, 1] (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID)."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    return np.clip((values - (center - 0.5)) / (width - 1.0 if width > 1 else 1.0) + 0.5, 0.0, 1.0)


def _full_range(raw: np.ndarray, ds: Dataset) -> tuple[float, float]:
    """The range the stored values can take, after the modality rescale."""
    from pydicom.pixels.processing import apply_modality_lut

    if raw.dtype.kind == "f":  # float pixel data has no declared range: the image's own
        return float(np.nanmin(raw)), float(np.nanmax(raw))
    bits = max(1, min(_int(ds, "BitsStored", raw.dtype.itemsize * 8), 32))
    signed = _int(ds, "PixelRepresentation", 0) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = np.asarray(apply_modality_lut(np.array([low, high], dtype=np.int64), ds), dtype=np.float64)
    return float(ends.min()), float(ends.max())


# ----- the patient, pseudonymised ---------------------------------------------------------------
SALT_NAME = "patient_salt"


def read_patient_id(source: Source) -> str | None:
    """The file's PatientID (stripped), or None when it has none; never logged or written."""
    try:
        ds = _read(source, pixels=False)
    except DicomRefused:
        return None
    value = str(ds.get("PatientID", "") or "").strip()
    return value or None


def load_salt(folder: str | Path) -> bytes:
    """The secret salt of patient pseudonyms kept in ``folder`` (created on first use, mode 0600).

    It stays on this machine: with it, a pseudonym could be checked against a guessed ID.
    """
    path = Path(folder) / SALT_NAME
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    salt = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(salt.hex() + "\n")
    return salt


def patient_group(patient_id: str, salt: bytes) -> str:
    """A patient's pseudonym: ``patient-`` and 16 hex digits of an HMAC-SHA256 of the ID."""
    return "patient-" + hmac.new(salt, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


__all__ = [
    "SALT_NAME",
    "DicomHeader",
    "DicomRefused",
    "DicomTooLarge",
    "DicomSettings",
    "check_dicom_header",
    "decode_dicom",
    "frame_reason",
    "header_of",
    "load_salt",
    "patient_group",
    "pixel_limit_reason",
    "read_dicom_header",
    "read_patient_id",
    "settings_for_model",
]
