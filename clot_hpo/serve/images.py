"""Uploaded bytes to pixels, with the limits a public-facing decoder needs.

An upload is checked in three steps, each before the next costs anything: its byte size
(by the app, while the body is read), its declared dimensions (Pillow reads only the
header at ``Image.open``; a decompression bomb is refused before a pixel is decoded), and
that it decodes. Nothing is written to disk.

The model's input is decoded and resized exactly as in training and ``clot-hpo predict``
(TensorFlow's ``decode_image``, bilinear resize with antialiasing, rounded to uint8), so a
probability on the page equals the one ``predict`` prints for the same file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from clot_hpo.data.dicom import DicomRefused, DicomSettings, decode_dicom
from clot_hpo.data.limits import DEFAULT_MAX_PIXELS, is_dicom_bytes, is_dicom_name

# DEFAULT_MAX_PIXELS is data.max_pixels' default: the page, training, predict and evaluate
# share one limit (`clot-hpo serve --max-pixels` or the config's data.max_pixels change it).
# Formats TensorFlow decodes (and training used); others that Pillow reads go through Pillow.
_TF_FORMATS = {"PNG", "JPEG", "GIF", "BMP"}
DISPLAY_MIN, DISPLAY_MAX = 256, 512  # the longest side of the image shown under its overlay


class ImageRejected(ValueError):
    """An upload that is not accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class DecodedImage:
    """An upload decoded: the original RGB pixels and the model's input."""

    filename: str
    pixels: np.ndarray  # uint8 (H, W, 3), as uploaded (a DICOM file's window, rounded for display)
    model_input: np.ndarray  # float32 (S, S, 3), raw [0, 255], as in training


def decode_image_bytes(
    data: bytes,
    filename: str,
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dicom: DicomSettings | None = None,
) -> DecodedImage:
    """Decode an image file's bytes for a model of input ``image_size``.

    A DICOM upload is decoded by the data layer's DICOM reader with ``dicom``'s window and
    frame (default: the file's own window, else the full range; single-frame only), as
    ``predict`` decodes the same file.

    Raises:
        ImageRejected: 400 for an empty file or one that is not a decodable image, 413 for
            one whose declared width x height exceeds ``max_pixels``, 415 for a DICOM file
            that cannot become an image (the sentence ``predict`` prints); the message names
            the file.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected(400, f"{filename}: the file is empty")
    if is_dicom_bytes(data) or is_dicom_name(filename):
        return _decode_dicom_upload(data, filename, image_size, max_pixels, dicom)
    try:
        # Lazy: only the header is read here, so the size check below costs nothing.
        image = Image.open(io.BytesIO(data))
        width, height = image.size
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
    if width * height > max_pixels:
        raise ImageRejected(
            413,
            f"{filename}: images may have at most {max_pixels:,} pixels, but this one declares "
            f"{width} x {height} = {width * height:,}",
        )
    try:
        if image.format in _TF_FORMATS:
            pixels = _decode_with_tensorflow(data)
        else:
            image.load()
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise ImageRejected(
            400, f"{filename}: not an image file that can be decoded ({type(exc).__name__}: {exc})"
        ) from None
    return DecodedImage(filename=filename, pixels=pixels, model_input=resize_for_model(pixels, image_size))


def _decode_dicom_upload(
    data: bytes, filename: str, image_size: int, max_pixels: int, dicom: DicomSettings | None
) -> DecodedImage:
    from clot_hpo.data.pipeline import resize_pixels

    try:
        pixels, _ = decode_dicom(data, settings=dicom, max_pixels=max_pixels)
    except DicomRefused as exc:
        status = 413 if exc.reason.startswith("too many pixels") else 415
        raise ImageRejected(status, f"{filename}: {exc.reason}") from None
    shown = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return DecodedImage(filename=filename, pixels=shown, model_input=resize_pixels(pixels, image_size))


def _decode_with_tensorflow(data: bytes) -> np.ndarray:
    import tensorflow as tf

    # channels=3 and expand_animations=False as in the training pipeline: grayscale becomes
    # RGB, alpha is dropped, a GIF gives its first frame, 16-bit PNGs are scaled to 8 bits.
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    return np.asarray(image, dtype=np.uint8)


def resize_for_model(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 RGB -> float32 ``(S, S, 3)`` in [0, 255], resized as the training pipeline does."""
    import tensorflow as tf

    resized = tf.image.resize(pixels, [image_size, image_size], method="bilinear", antialias=True)
    return np.asarray(tf.saturate_cast(tf.round(resized), tf.uint8), dtype=np.float32)


def display_pixels(pixels: np.ndarray) -> np.ndarray:
    """The image at a size worth looking at: longest side within 256-512 px, aspect kept."""
    from PIL import Image

    height, width = pixels.shape[:2]
    longest = max(height, width)
    target = min(max(longest, DISPLAY_MIN), DISPLAY_MAX)
    if target == longest:
        return pixels
    scale = target / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "ImageRejected",
    "decode_image_bytes",
    "display_pixels",
    "resize_for_model",
]
