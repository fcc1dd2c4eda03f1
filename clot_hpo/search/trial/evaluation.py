"""The search's share of a trial once it trained: the evaluation, the predictions, the model.

Each file the trial's run gets is recorded in the ledger (its sha256 on the Optuna trial)
before it is spooled: ``clot-hpo promote`` checks what it downloads against these
(:mod:`clot_hpo.search.ledger`). Imported by the trial process only.
"""

from __future__ import annotations

from typing import Protocol

import keras
import numpy as np

from clot_hpo.data.dicom import DicomSettings
from clot_hpo.evaluate import evaluate_trial
from clot_hpo.evaluate.predictions import TEST_PREDICTIONS, VAL_PREDICTIONS, trial_predictions
from clot_hpo.search.ledger import (
    ATTR_MODEL_SHA256,
    ATTR_TEST_PREDICTIONS_SHA256,
    ATTR_VAL_PREDICTIONS_SHA256,
)
from clot_hpo.search.trial.phases import TrialSetup
from clot_hpo.tracking import TrialTracker
from clot_hpo.train import fixed_size, inference_copy
from clot_hpo.util import file_sha256, text_sha256


class EvaluatedSplits(Protocol):
    """What the evaluation reads of a trial's data: a ``DecodedSplits``, or a cross-validated pool."""

    def images(self, split: str) -> np.ndarray: ...  # noqa: D102

    def labels(self, split: str) -> np.ndarray: ...  # noqa: D102

    def keys(self, split: str) -> list[str]: ...  # noqa: D102


def evaluate_and_log(
    setup: TrialSetup,
    tracker: TrialTracker,
    model: keras.Model,
    data: EvaluatedSplits,
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    history: dict[str, list[float]],
    threshold: float,
    evidence: dict[str, str],
    overrides: dict[str, float] | None = None,
) -> None:
    """Intervals (bootstrap) and figures, for the trial's run: only a tracked trial needs them.

    Args:
        setup: the trial.
        tracker: receives the evaluation.
        model: the trained model (the failure gallery explains its predictions).
        data: the decoded splits (sample images, the gallery's test images).
        predictions: validation labels and probabilities, then test labels and probabilities.
        history: the training history (drawn as training curves).
        threshold: the decision threshold chosen on validation.
        evidence: the predictions files (:func:`record_predictions`), logged as they are.
        overrides: metrics that replace the evaluation's own (a cross-validated trial's
            objective is its folds' mean, not the pooled out-of-fold value).
    """
    ev = setup.config.evaluation
    y_val, p_val, y_test, p_test = predictions
    samples = None
    # Opt-in: by default no image leaves the machine.
    if ev.log_sample_images:
        samples = np.asarray(data.images("val")[: ev.log_sample_images], dtype=np.float32)
    report = evaluate_trial(
        y_val,
        p_val,
        y_test,
        p_test,
        ev,
        history=history,
        seed=setup.seed,
        sample_images=samples,
        figures=True,
    )
    # Grad-CAM overlays of test images, one figure per kind (explanations/): images of the data,
    # so by default only to a store that keeps them on this machine (evaluation.explanations).
    if setup.config.logs_explanations:
        from clot_hpo.explain import failure_gallery

        # Grad-CAM reads the side from the model: a model built for any side gets the full one.
        explained = fixed_size(model, setup.settings.image_size)
        gallery = failure_gallery(explained, data.images("test"), y_test, p_test, float(threshold))
        report.figures.update({f"explanations/{kind}": fig for kind, fig in gallery.items()})
    tracker.log_evaluation(
        "",
        metrics={**report.metrics, **(overrides or {})},
        artifacts={**report.artifacts, **evidence},
        figures=report.figures,
    )


def record_predictions(
    setup: TrialSetup,
    data: EvaluatedSplits,
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, str]:
    """The trial's predictions files (``key,label,probability`` CSVs), their sha256 in the ledger.

    Recorded on the Optuna trial before anything is uploaded: ``promote`` checks the files it
    downloads from the tracking server against these (:mod:`clot_hpo.search.ledger`).
    """
    evidence = trial_predictions(data, predictions)
    files = ((VAL_PREDICTIONS, ATTR_VAL_PREDICTIONS_SHA256), (TEST_PREDICTIONS, ATTR_TEST_PREDICTIONS_SHA256))
    for name, attr in files:
        text = evidence.get(name)
        setup.trial.set_user_attr(attr, text_sha256(text) if text is not None else None)
    return evidence


def log_model(setup: TrialSetup, tracker: TrialTracker, model: keras.Model, threshold: float) -> None:
    """Record the trained model for inference (:func:`~clot_hpo.train.inference_copy`).

    Saved once here; its file's sha256 goes to the ledger before the file is spooled.
    """
    import tempfile
    from pathlib import Path

    if not tracker.enabled:  # an untracked study keeps no model
        return
    with tempfile.TemporaryDirectory(prefix="clot-hpo-model-") as tmp:
        path = Path(tmp) / "model.keras"
        inference_copy(model, setup.settings.image_size).save(path)
        setup.trial.set_user_attr(ATTR_MODEL_SHA256, file_sha256(path))
        tracker.log_model(
            "",
            path,
            image_size=setup.settings.image_size,
            threshold=threshold,
            dicom=DicomSettings.from_config(setup.config.data.dicom).as_metadata(),
        )
