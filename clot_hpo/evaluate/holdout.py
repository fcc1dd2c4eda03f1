"""A trained model applied to image files: probabilities, and metrics on a labelled folder.

Used by ``clot-hpo predict`` and ``clot-hpo evaluate`` (:mod:`clot_hpo.registry.commands`),
which load the model; nothing here knows where a model comes from. Images are decoded and
resized exactly as in training (:func:`clot_hpo.data.load_image_batch`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clot_hpo.data.dicom import DicomSettings
from clot_hpo.errors import DataError
from clot_hpo.evaluate.metrics import binary_metrics, confusion_counts

PREDICT_CHUNK = 256  # images decoded and predicted at a time: bounded memory on big folders
PREDICT_BATCH = 32  # Keras's batch inside a chunk


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def score_image_files(
    model: Any,
    paths: Sequence[Path | str],
    image_size: int,
    *,
    max_pixels: int | None = None,
    dicom: DicomSettings | None = None,
) -> Iterator[list[tuple[Any, float]]]:
    """``(path, probability)`` pairs of image files, one list per chunk of :data:`PREDICT_CHUNK`.

    ``model`` is a Keras model taking raw [0, 255] float32 pixels. At most one chunk of
    images is in memory at a time; a caller streaming results writes each chunk as it comes.
    ``max_pixels`` (default ``data.max_pixels``'s) is checked from each header before decoding;
    ``dicom`` windows DICOM files (``data.dicom``).

    Raises:
        DataError: a file is too large or cannot be decoded (the message names it).
    """
    from clot_hpo.data.limits import DEFAULT_MAX_PIXELS
    from clot_hpo.data.pipeline import load_image_batch

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    for chunk in _chunks(list(paths), PREDICT_CHUNK):
        batch = load_image_batch([str(p) for p in chunk], image_size, max_pixels=limit, dicom=dicom)
        probs = model.predict(batch, batch_size=PREDICT_BATCH, verbose=0)
        yield list(zip(chunk, (float(v) for v in probs.reshape(len(chunk), -1)[:, 0]), strict=True))


def predict_image_files(
    model: Any,
    paths: Sequence[Path | str],
    image_size: int,
    *,
    max_pixels: int | None = None,
    dicom: DicomSettings | None = None,
) -> list[float]:
    """Positive-class probabilities of image files, one per path, in order (see :func:`score_image_files`)."""
    scored = score_image_files(model, paths, image_size, max_pixels=max_pixels, dicom=dicom)
    return [prob for chunk in scored for _, prob in chunk]


@dataclass
class LabelledFolder:
    """The labelled images of a data folder, and the interval settings to evaluate them with."""

    data: str
    paths: list[str]
    labels: list[int]
    confidence: float = 0.95
    n_bootstrap: int = 1000
    max_pixels: int | None = None
    skipped: list[tuple[str, str]] | None = None
    dicom: DicomSettings | None = None


def load_labelled_folder(
    data: str | Path,
    *,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> LabelledFolder:
    """Scan and validate a labelled data folder (either layout) before any model is loaded.

    The folder gets the checks training data gets (:func:`clot_hpo.data.validate_images`):
    images inside the data folder, within ``data.max_pixels``, decodable to the end; a bad
    one is named (or skipped and listed with ``data.skip_corrupt``).

    Args:
        data: a folder with class folders or a metadata CSV.
        config_path: an experiment YAML whose ``data`` section and interval settings
            (``evaluation.confidence_level``, ``evaluation.bootstrap_samples``) apply.
        overrides: ``data`` keys set on the command line (``max_pixels``,
            ``allow_outside_root``, ``skip_corrupt``); None values are ignored.

    Raises:
        DataError: the folder holds no labelled image, or an unusable one.
    """
    from clot_hpo.config import DataConfig, load_config
    from clot_hpo.data.scan import check_classes, scan_dataset
    from clot_hpo.data.validate import validate_images

    settings: dict[str, Any] = {}
    if config_path:
        cfg = load_config(config_path)
        data_cfg = cfg.data.model_copy(update={"path": str(data)})
        settings = {
            "confidence": cfg.evaluation.confidence_level,
            "n_bootstrap": cfg.evaluation.bootstrap_samples,
        }
    else:
        data_cfg = DataConfig(path=str(data))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        data_cfg = DataConfig.model_validate({**data_cfg.model_dump(), **given})
    table = scan_dataset(data_cfg, root=Path(data))
    if len(table) == 0:
        raise DataError(f"{data}: no labelled images found")
    checked = validate_images(
        table,
        skip_corrupt=data_cfg.skip_corrupt,
        max_pixels=data_cfg.max_pixels,
        memory_bytes=data_cfg.decode_memory_mb * 2**20,
        dicom=DicomSettings.from_config(data_cfg.dicom),
    )
    if checked.skipped:
        check_classes(checked.frame, data_cfg, str(data), table.attrs.get("layout", "folders"))
    return LabelledFolder(
        data=str(data),
        paths=[str(p) for p in checked.frame["path"]],
        labels=[int(v) for v in checked.frame["label"]],
        max_pixels=data_cfg.max_pixels,
        skipped=checked.skipped,
        dicom=DicomSettings.from_config(data_cfg.dicom),
        **settings,
    )


def evaluate_model(
    model: Any, folder: LabelledFolder, *, threshold: float, image_size: int, seed: int = 0
) -> dict[str, Any]:
    """Metrics (with intervals) and the confusion matrix of ``model`` on a labelled folder.

    Args:
        model: a Keras model taking raw [0, 255] float32 pixels.
        folder: what :func:`load_labelled_folder` found.
        threshold: the decision threshold (``p >= threshold`` is a clot).
        image_size: the model's input size.
        seed: the bootstrap's seed.

    Raises:
        DataError: an image cannot be decoded.
    """
    probs = predict_image_files(
        model, folder.paths, image_size, max_pixels=folder.max_pixels, dicom=folder.dicom
    )
    return {
        "data": folder.data,
        "n": len(folder.labels),
        "threshold": threshold,
        "image_size": image_size,
        "confidence": folder.confidence,
        "metrics": binary_metrics(
            folder.labels,
            probs,
            threshold=threshold,
            confidence=folder.confidence,
            n_bootstrap=folder.n_bootstrap,
            seed=seed,
        ),
        "confusion_matrix": confusion_counts(folder.labels, probs, threshold),
    }


__all__ = [
    "PREDICT_CHUNK",
    "LabelledFolder",
    "evaluate_model",
    "load_labelled_folder",
    "predict_image_files",
    "score_image_files",
]
