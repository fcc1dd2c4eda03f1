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

from clot_hpo.errors import DataError
from clot_hpo.evaluate.metrics import binary_metrics, confusion_counts

PREDICT_CHUNK = 256  # images decoded and predicted at a time: bounded memory on big folders
PREDICT_BATCH = 32  # Keras's batch inside a chunk


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def score_image_files(
    model: Any, paths: Sequence[Path | str], image_size: int
) -> Iterator[list[tuple[Any, float]]]:
    """``(path, probability)`` pairs of image files, one list per chunk of :data:`PREDICT_CHUNK`.

    ``model`` is a Keras model taking raw [0, 255] float32 pixels. At most one chunk of
    images is in memory at a time; a caller streaming results writes each chunk as it comes.

    Raises:
        DataError: a file cannot be decoded (the message names it).
    """
    from clot_hpo.data.pipeline import load_image_batch

    for chunk in _chunks(list(paths), PREDICT_CHUNK):
        batch = load_image_batch([str(p) for p in chunk], image_size)
        probs = model.predict(batch, batch_size=PREDICT_BATCH, verbose=0)
        yield list(zip(chunk, (float(v) for v in probs.reshape(len(chunk), -1)[:, 0]), strict=True))


def predict_image_files(model: Any, paths: Sequence[Path | str], image_size: int) -> list[float]:
    """Positive-class probabilities of image files, one per path, in order (see :func:`score_image_files`)."""
    return [prob for scored in score_image_files(model, paths, image_size) for _, prob in scored]


@dataclass
class LabelledFolder:
    """The labelled images of a data folder, and the interval settings to evaluate them with."""

    data: str
    paths: list[str]
    labels: list[int]
    confidence: float = 0.95
    n_bootstrap: int = 1000


def load_labelled_folder(data: str | Path, *, config_path: str | None = None) -> LabelledFolder:
    """Scan a labelled data folder (either layout) before any model is loaded.

    Args:
        data: a folder with class folders or a metadata CSV.
        config_path: an experiment YAML whose ``data`` section and interval settings
            (``evaluation.confidence_level``, ``evaluation.bootstrap_samples``) apply.

    Raises:
        DataError: the folder holds no labelled image.
    """
    from clot_hpo.config import DataConfig, load_config
    from clot_hpo.data.scan import scan_dataset

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
    table = scan_dataset(data_cfg, root=Path(data))
    if len(table) == 0:
        raise DataError(f"{data}: no labelled images found")
    return LabelledFolder(
        data=str(data),
        paths=[str(p) for p in table["path"]],
        labels=[int(v) for v in table["label"]],
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
    probs = predict_image_files(model, folder.paths, image_size)
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
