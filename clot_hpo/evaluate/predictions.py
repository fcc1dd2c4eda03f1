"""A trial's evidence: its predictions on validation and test, one row per image.

Every completed trial keeps ``val_predictions.csv`` and ``test_predictions.csv`` with the
columns ``key,label,probability``: ``key`` is the image's content hash (the file's sha256,
as the data layer computes it for the dataset digest; never its path, which may name a
patient), ``label`` is 0/1 and ``probability`` the model's positive-class score. Rows come in
the split manifest's order. The report's tables, paired tests and calibration are computed
from these files alone (:func:`clot_hpo.evaluate.paired.read_predictions` reads them), so
anyone holding them can recompute every figure.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clot_hpo.evaluate.metrics import as_arrays

log = logging.getLogger(__name__)

PREDICTION_FIELDS = ("key", "label", "probability")
VAL_PREDICTIONS = "val_predictions.csv"
TEST_PREDICTIONS = "test_predictions.csv"
PREDICTION_FILES = {"val": VAL_PREDICTIONS, "test": TEST_PREDICTIONS}


def predictions_csv(keys: Sequence[str], labels: Any, probabilities: Any) -> str:
    """The ``key,label,probability`` CSV of one split (probabilities round-trip exactly).

    Raises:
        ValueError: the three columns differ in length, a key is empty or repeated, a label
            is not 0/1 or a probability is outside [0, 1].
    """
    y, p = as_arrays(labels, probabilities)
    if len(keys) != y.size:
        raise ValueError(
            f"one key per prediction is needed, but got {len(keys)} keys and {y.size} predictions"
        )
    if any(not str(k) for k in keys):
        raise ValueError("a prediction's key must not be empty")
    if len(set(keys)) != len(keys):
        raise ValueError("each prediction's key must be unique within a split")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PREDICTION_FIELDS)
    # repr: the shortest decimal that reads back as the same float64.
    rows = zip(keys, y, p, strict=True)
    writer.writerows((str(k), int(label), repr(float(prob))) for k, label, prob in rows)
    return out.getvalue()


def prediction_artifacts(
    keys: Mapping[str, Sequence[str]],
    scored: Mapping[str, tuple[Any, Any]],
    *,
    expected_labels: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """``{"val_predictions.csv": text, "test_predictions.csv": text}`` for the splits scored.

    Args:
        keys: split -> image keys in manifest order (``DecodedSplits.keys``).
        scored: split -> ``(labels, probabilities)`` as the model produced them, in the same
            order; splits absent from ``keys`` or :data:`PREDICTION_FILES` are left out.
        expected_labels: split -> the manifest's labels; when given, the scored labels must
            equal them row by row (proof that the rows and the keys line up).

    Raises:
        ValueError: a split's scored rows do not line up with its keys or manifest labels.
    """
    files: dict[str, str] = {}
    for split, (labels, probabilities) in scored.items():
        if split not in PREDICTION_FILES or split not in keys:
            continue
        if expected_labels is not None and split in expected_labels:
            want = np.asarray(expected_labels[split]).astype(np.int64).reshape(-1)
            got = np.asarray(labels).astype(np.int64).reshape(-1)
            if want.shape != got.shape or not np.array_equal(want, got):
                raise ValueError(
                    f"the {split} predictions are not in manifest order: their labels differ from the "
                    f"manifest's ({got.size} scored, {want.size} in the manifest)"
                )
        files[PREDICTION_FILES[split]] = predictions_csv(keys[split], labels, probabilities)
    return files


def trial_predictions(splits: Any, predictions: tuple[Any, Any, Any, Any]) -> dict[str, str]:
    """A trial's predictions files, keyed by its splits' content hashes; ``{}`` when it cannot say.

    Args:
        splits: the trial's decoded splits (``DecodedSplits``): ``keys(split)`` and
            ``labels(split)`` in manifest order.
        predictions: validation labels and probabilities, then test labels and probabilities,
            in manifest order.

    Keys that cannot be had (a manifest written before they existed) or rows that do not line
    up with the manifest are logged and leave the files out: the rest of the trial's
    evaluation is kept either way.
    """
    from clot_hpo.errors import DataError

    y_val, p_val, y_test, p_test = predictions
    try:
        return prediction_artifacts(
            {split: splits.keys(split) for split in PREDICTION_FILES},
            {"val": (y_val, p_val), "test": (y_test, p_test)},
            expected_labels={split: splits.labels(split) for split in PREDICTION_FILES},
        )
    except (DataError, ValueError) as exc:
        log.warning("the trial's predictions files are left out: %s", exc)
        return {}


__all__ = [
    "PREDICTION_FIELDS",
    "PREDICTION_FILES",
    "TEST_PREDICTIONS",
    "VAL_PREDICTIONS",
    "prediction_artifacts",
    "predictions_csv",
    "trial_predictions",
]
