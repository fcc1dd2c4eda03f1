"""Uploaded bytes to pixels, through the data layer's decoder, with a public-facing page's limits.

An upload is checked in four steps, each before the next costs anything: its byte size (by
the app, while the body is read), its format (PNG, JPEG or DICOM, the formats training reads:
any other is 415), its declared dimensions (Pillow reads only the header at ``Image.open``,
pydicom a DICOM file's header without its pixels; a decompression bomb is refused before a
pixel is decoded), and that it decodes. Nothing is
written to disk.

Decoding and resizing are the data layer's own functions (:func:`clot_hpo.data.pipeline.decode_image`
and :func:`~clot_hpo.data.pipeline.resize_image`, what training and ``clot-hpo predict`` run), so
a probability on the page equals the one ``predict`` prints for the same file, and a format the
data layer learns the page reads too. Only the first frame of an animated PNG is decoded. A DICOM
upload is decoded by the data layer's DICOM reader (:func:`clot_hpo.data.dicom.decode_dicom`)
with the study's window and frame, as ``predict`` decodes the same file; its header is sized
before any pixel is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from clot_hpo.data.dicom import (
    DicomRefused,
    DicomSettings,
    DicomTooLarge,
    check_dicom_header,
    decode_dicom,
    read_dicom_header,
)
from clot_hpo.data.limits import DEFAULT_MAX_PIXELS, is_dicom_bytes, is_dicom_name

# DEFAULT_MAX_PIXELS is data.max_pixels' default: the page, training, predict and evaluate
# share one limit (`clot-hpo serve --max-pixels` or the config's data.max_pixels change it).
# The formats training reads (data/scan.py's IMAGE_SUFFIXES: .png, .jpg, .jpeg), as Pillow
# names them; MPO is a JPEG with extra pictures after the first (cameras write it), and the
# decoder reads the first.
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG"}
ACCEPTED_TEXT = "PNG, JPEG and DICOM, the formats training reads"
DISPLAY_MIN, DISPLAY_MAX = 256, 512  # the longest side of the image shown under its overlay
# Peak memory per pixel of decode_image + resize_image, measured with VmHWM on 5000 x 5000
# images (8-bit RGB PNG 12.3, 16-bit grey PNG 12.3, baseline JPEG 12.3, progressive JPEG
# 13.2 bytes): the resize's float32 copy of the full image dominates.
DECODE_BYTES_PER_PIXEL = 14
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageRejected(ValueError):
    """An upload that is not accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadHeader:
    """What an accepted upload's header declares, and the memory decoding it will take."""

    format: str  # PNG, JPEG or DICOM
    width: int
    height: int
    decode_bytes: int


@dataclass
class DecodedImage:
    """An upload decoded: the model's input and, when asked for, the picture shown under an overlay."""

    filename: str
    model_input: np.ndarray  # float32 (S, S, 3), raw [0, 255], as in training
    display: np.ndarray | None = None  # uint8 (h, w, 3), longest side within 256-512 px


def _png_sample_bytes(data: bytes) -> int:
    """Extra bytes per pixel of a 16-bit PNG: the decoder's 16-bit output before its 8-bit copy."""
    if len(data) < 26 or not data.startswith(_PNG_SIGNATURE) or data[24] != 16:
        return 0
    colour = data[25]  # IHDR colour type: 2 RGB, 6 RGBA carry three channels once decoded
    return 6 if colour in (2, 6) else 2


def read_upload_header(
    data: bytes,
    filename: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dicom: DicomSettings | None = None,
) -> UploadHeader:
    """Check an upload's format and declared size from its header; no pixel is decoded.

    Raises:
        ImageRejected: 400 for an empty file or one that is no image, 415 for a format other
            than PNG, JPEG or DICOM (or a DICOM file that cannot become an image: the sentence
            ``predict`` prints), 413 for a declared size over ``max_pixels``; the message
            names the file.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected(400, f"{filename}: the file is empty")
    if is_dicom_bytes(data) or is_dicom_name(filename):
        return _dicom_upload_header(data, filename, max_pixels, dicom or DicomSettings())
    try:
        # Lazy: only the header is read here, so the checks below cost nothing.
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            kind = image.format or "unknown"
    except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
        raise ImageRejected(
            413, f"{filename}: images may have at most {max_pixels:,} pixels ({exc})"
        ) from None
    except UnidentifiedImageError:  # its message names an in-memory buffer, not the file
        raise ImageRejected(
            400, f"{filename}: not an image file that can be decoded (no image format recognized)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ImageRejected(400, f"{filename}: not an image file that can be decoded ({exc})") from None
    if kind not in ACCEPTED_FORMATS:
        raise ImageRejected(
            415, f"{filename}: a {kind} image is not accepted: the page reads {ACCEPTED_TEXT} (convert it)"
        )
    pixels = width * height
    if pixels > max_pixels:
        raise ImageRejected(
            413,
            f"{filename}: images may have at most {max_pixels:,} pixels, but this one declares "
            f"{width} x {height} = {pixels:,}",
        )
    per_pixel = DECODE_BYTES_PER_PIXEL + _png_sample_bytes(data)
    return UploadHeader(ACCEPTED_FORMATS[kind], width, height, pixels * per_pixel)


def _rejected(filename: str, refusal: DicomRefused) -> ImageRejected:
    status = 413 if isinstance(refusal, DicomTooLarge) else 415
    return ImageRejected(status, f"{filename}: {refusal.reason}")


def _dicom_upload_header(data: bytes, filename: str, max_pixels: int, dicom: DicomSettings) -> UploadHeader:
    try:
        header = read_dicom_header(data)
        check_dicom_header(header, max_pixels, dicom)
    except DicomRefused as exc:
        raise _rejected(filename, exc) from None
    return UploadHeader("DICOM", header.columns, header.rows, header.decode_bytes())


def decode_image_bytes(
    data: bytes,
    filename: str,
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    display: bool = False,
    dicom: DicomSettings | None = None,
) -> DecodedImage:
    """Decode an upload for a model of input ``image_size``, as training decodes a file.

    Args:
        data: the file's bytes.
        filename: its name, for messages.
        image_size: the model's input side.
        max_pixels: largest declared width x height.
        display: also keep the picture at a size worth showing (for an overlay); otherwise
            the full-size pixels are dropped as soon as the model's input is made.
        dicom: a DICOM upload's window and frame (``data.dicom``; default: the file's own
            window, else the full range; single-frame only).

    Raises:
        ImageRejected: as :func:`read_upload_header`, and 400 for a file that does not decode.
    """
    header = read_upload_header(data, filename, max_pixels=max_pixels, dicom=dicom)
    from clot_hpo.data.pipeline import decode_image, resize_image, resize_pixels

    if header.format == "DICOM":
        try:
            window, _ = decode_dicom(data, settings=dicom, max_pixels=max_pixels)
        except DicomRefused as exc:
            raise _rejected(filename, exc) from None
        # The window's float output goes to the model unrounded, as in training.
        shown = display_pixels(np.clip(np.rint(window), 0, 255).astype(np.uint8)) if display else None
        return DecodedImage(filename=filename, model_input=resize_pixels(window, image_size), display=shown)
    try:
        pixels = np.asarray(decode_image(data), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        message = getattr(exc, "message", None) or str(exc)
        raise ImageRejected(
            400, f"{filename}: not an image file that can be decoded ({type(exc).__name__}: {message})"
        ) from None
    model_input = np.asarray(resize_image(pixels, image_size), dtype=np.float32)
    shown = display_pixels(pixels) if display else None
    return DecodedImage(filename=filename, model_input=model_input, display=shown)


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """The image at a size worth looking at: longest side within 256-512 px, aspect kept."""
    from PIL import Image

    height, width = pixels.shape[:2]
    longest = max(height, width)
    target = min(max(longest, DISPLAY_MIN), DISPLAY_MAX)
    if target == longest:
        return np.array(pixels, dtype=np.uint8)  # a copy: the full-size array can be freed
    scale = target / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "ImageRejected",
    "UploadHeader",
    "decode_image_bytes",
    "display_pixels",
    "read_upload_header",
]
