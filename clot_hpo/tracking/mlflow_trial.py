"""A trial's side of the MLflow tracker: params, epochs, the evaluation, the model.

The study process calls these while it forwards what a trial's process spooled
(:mod:`clot_hpo.tracking.spool`); the model's packaging is
:mod:`clot_hpo.tracking.model_packaging`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clot_hpo.tracking import model_packaging
from clot_hpo.tracking.base import TrialTracker, as_figure, to_plain
from clot_hpo.tracking.mlflow_backend import MlflowBackend, close_figure, now_ms
from clot_hpo.tracking.store import MAX_PARAM_LENGTH, entities
from clot_hpo.tracking.tags import TAG_IMAGE_SIZE, TAG_MODEL_ID, TAG_THRESHOLD
from clot_hpo.util import finite_float


def _to_float(value: Any) -> float | None:
    """A Python float of a number (NumPy scalars and 0-d tensors too; NaN kept), or None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class MlflowTrialTracker(MlflowBackend, TrialTracker):
    """What a trial records in MLflow (see :class:`~clot_hpo.tracking.base.TrialTracker`).

    Takes :class:`~clot_hpo.tracking.mlflow_backend.MlflowBackend`'s arguments.
    """

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log the trial's hyperparameters (one batched call)."""
        if not run_id or not params:
            return
        batch = [entities.Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        self._call("log params", self.client.log_batch, run_id, params=batch)

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics in one ``log_batch`` call (step = epoch)."""
        if not run_id or not metrics:
            return
        ts = now_ms()
        batch = []
        for key, value in metrics.items():
            number = _to_float(value)
            if number is not None:  # NaN/inf are kept: a diverging loss is information
                batch.append(entities.Metric(str(key), number, ts, int(epoch)))
        if batch:
            self._call(f"log epoch {epoch} metrics", self.client.log_batch, run_id, metrics=batch)

    def log_evaluation(
        self,
        run_id: str,
        *,
        metrics: dict[str, float],
        artifacts: dict[str, Any],
        figures: dict[str, Any],
        step: int = 0,
    ) -> None:
        """Evaluation metrics in one batch at ``step``, artifacts, then the figures.

        ``step`` is one past the last epoch (the forwarder passes it): Keras logs
        ``val_auc``/``val_accuracy`` per epoch under the evaluation's names, and MLflow shows a
        run's value at its highest step, so the evaluation (the threshold-aware, full-split
        figure) comes after the epochs to be the one shown and compared (``clot-hpo promote``).
        An artifact given as a dict is written as JSON (``log_dict``); one given as a string
        is a text file stored as it is (``log_text``: ``test_predictions.csv``).
        """
        if not run_id:
            for fig in (figures or {}).values():
                close_figure(as_figure(fig))
            return
        ts = now_ms()
        numbers = ((str(k), _to_float(v)) for k, v in metrics.items())
        batch = [entities.Metric(k, v, ts, step) for k, v in numbers if v is not None]
        if batch:
            self._call("log evaluation metrics", self.client.log_batch, run_id, metrics=batch)
        if "threshold" in metrics and finite_float(metrics["threshold"]) is not None:
            self._call(
                "tag the threshold",
                self.client.set_tag,
                run_id,
                TAG_THRESHOLD,
                repr(float(metrics["threshold"])),
            )
        for name, payload in (artifacts or {}).items():
            if isinstance(payload, str):  # a text file as written: the predictions CSVs
                self._call(f"log {name}", self.client.log_text, run_id, payload, str(name))
            else:
                self._call(f"log {name}", self.client.log_dict, run_id, to_plain(payload), str(name))
        self._log_figures(run_id, figures, folder="")

    def log_model(
        self,
        run_id: str,
        model: Any,
        *,
        image_size: int,
        threshold: float,
        step: int = 0,
        dicom: dict[str, Any] | None = None,
    ) -> str | None:
        """Log the Keras model as the MLflow model of the trial's run, and its weights file.

        ``model`` is a Keras model or the ``.keras`` file a trial process saved (the study
        process logs from the file, without importing Keras); the packaging is
        :func:`clot_hpo.tracking.model_packaging.log_keras_model`. The run is tagged with
        ``threshold``, ``image_size`` and ``clot_hpo.model_id``. ``step`` is the evaluation's,
        so the UI links the evaluation metrics (not epoch 0's) to this model.

        Returns:
            The MLflow model's id (``models:/<model_id>``), or None when it was not stored.
        """
        if not run_id or not self.log_models:
            return None
        tags = [
            entities.RunTag(TAG_THRESHOLD, repr(float(threshold))),
            entities.RunTag(TAG_IMAGE_SIZE, str(int(image_size))),
        ]
        self._call("tag threshold and image size", self.client.log_batch, run_id, tags=tags)
        with model_packaging.keras_file_of(model) as keras_file:
            model_id = self._call(
                "log the model",
                self._log_mlflow_model,
                run_id,
                keras_file,
                int(image_size),
                float(threshold),
                int(step),
                dicom,
                default=None,
            )
            if model_id:
                self._call("tag the model id", self.client.set_tag, run_id, TAG_MODEL_ID, model_id)
            self._call("log the weights file", model_packaging.log_weights, self.client, run_id, keras_file)
        return str(model_id) if model_id else None

    def _log_mlflow_model(
        self,
        run_id: str,
        keras_file: Path,
        image_size: int,
        threshold: float,
        step: int,
        dicom: dict[str, Any] | None,
    ) -> str:
        return model_packaging.log_keras_model(
            self.client,
            self.tracking_uri,
            run_id,
            keras_file,
            image_size=image_size,
            threshold=threshold,
            step=step,
            dicom=dicom,
        )
