"""The tracking seam: what the search tells a tracker, and the tracker that does nothing.

Two interfaces, one per caller:

* :class:`StudyTracker`, what the study process calls: it opens the study's parent run and
  every trial's child run, and closes each run with its final state, even when the trial's
  process crashed.
* :class:`TrialTracker`, what a trial records: hyperparameters, per-epoch metrics, the
  evaluation and the model. A trial's process records them with
  :class:`~clot_hpo.tracking.spool.SpoolTracker` (files); the study process's forwarder
  (:class:`~clot_hpo.tracking.trial_run.TrialRun`) hands them to its real tracker, which
  implements both (:class:`Tracker`).

:class:`NullTracker` implements both and records nothing (``--no-tracking``): the study loop
and the trial process then run the same code as a tracked study.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def to_plain(obj: Any) -> Any:
    """A JSON/YAML-ready copy: pydantic models dumped, NumPy scalars and Paths converted."""
    if hasattr(obj, "model_dump"):
        return to_plain(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (TypeError, ValueError):
            return obj
    return obj


def as_figure(obj: Any) -> Any:
    """A matplotlib Figure from a Figure, an Axes or an array of Axes (Optuna returns Axes)."""
    if hasattr(obj, "savefig"):
        return obj
    if hasattr(obj, "figure"):
        return obj.figure
    try:  # numpy array of Axes
        first = next(iter(getattr(obj, "flat", obj)))
        return first.figure
    except (TypeError, StopIteration, AttributeError):
        return obj


# Final trial states as Optuna names them; trackers map them to their own run statuses.
TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL")


class StudyTracker(ABC):
    """What the study process tells a tracker: the study's run and each trial's run."""

    # False for a tracker that records nothing: trial processes then skip spooling for it.
    enabled: bool = True

    @abstractmethod
    def check_available(self) -> None:
        """Fail fast (``TrackingUnavailable``) when the backend cannot be reached."""

    @abstractmethod
    def start_study(
        self,
        study_name: str,
        *,
        tags: dict[str, str] | None = None,
        objective: str | None = None,
        direction: str | None = None,
        headline: Sequence[str] = (),
        run_id: str | None = None,
    ) -> str:
        """Open (or reopen, on resume) the study's parent run; return its id.

        Args:
            study_name: the Optuna study.
            tags: extra tags of the parent run.
            objective: the metric the study optimizes, as trial runs log it (``val_auc``).
            direction: Optuna's direction for it, ``"maximize"`` or ``"minimize"``.
            headline: the best trial's metrics the study run shows (``test_auc`` and its
                interval), from the metric catalogue.
            run_id: the run the Optuna storage records as the study's: reopened when it is
                this study's run on this tracking server (else found by its tags, or created).
        """

    @abstractmethod
    def log_study_inputs(
        self,
        *,
        config: dict[str, Any],
        search_spaces: dict[str, Any],
        manifest_path: Path | None,
        dataset_digest: str | None,
    ) -> None:
        """Log the resolved config, search spaces, split manifest and dataset digest."""

    @abstractmethod
    def start_trial(self, trial_number: int, *, tags: dict[str, str] | None = None) -> str:
        """Open the trial's child run under the study run; return its id."""

    @abstractmethod
    def end_trial(
        self,
        run_id: str,
        state: str,
        *,
        reason: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Close a trial's run with its final Optuna ``state`` and why it ended so."""

    def close_orphaned_trials(
        self, *, only: set[int] | None = None, reason: str = "the study process ended before this trial did"
    ) -> list[int]:
        """Close trial runs a dead worker left RUNNING: those of the trial numbers in ``only`` (None: all).

        Returns the trial numbers closed. The default tracker has no runs to close.
        """
        return []

    @abstractmethod
    def log_study_summary(self, trials_csv: Path, figures: dict[str, Any]) -> None:
        """Attach the all-trials CSV and study-level figures (matplotlib) to the parent run."""

    @abstractmethod
    def end_study(self, status: str = "FINISHED") -> None:
        """Close the study's parent run."""


class TrialTracker(ABC):
    """What a trial records: its hyperparameters, epochs, evaluation and model."""

    # False for a tracker that records nothing: the trial then draws no figures, saves no model.
    enabled: bool = True

    @abstractmethod
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log the trial's hyperparameters."""

    @abstractmethod
    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        """Log one epoch's metrics in one batched call."""

    @abstractmethod
    def log_evaluation(
        self,
        run_id: str,
        *,
        metrics: dict[str, float],
        artifacts: dict[str, Any],
        figures: dict[str, Any],
        step: int = 0,
    ) -> None:
        """Log evaluation metrics, JSON artifacts (``name.json`` -> dict) and figures.

        Args:
            step: the metrics' step. The epochs log ``val_auc`` too, and a run shows a name's
                value at its highest step, so the evaluation goes one past the last epoch;
                the forwarder, which forwarded the epochs, passes it.
        """

    @abstractmethod
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
        """Log the trained Keras model (raw [0, 255] float32 pixels in) and its weights.

        Args:
            model: a Keras model, or the path of one saved as a ``.keras`` file.
            step: the evaluation's step (the model is linked to the metrics at it).
            dicom: the ``data.dicom`` settings it was trained with (``DicomSettings.as_metadata``).

        Returns:
            The stored model's id (MLflow's model id; a spool's file name), or None when
            nothing was stored.
        """


class Tracker(StudyTracker, TrialTracker):
    """A whole tracker: the study process's, which also forwards what trials recorded."""


class NullTracker(Tracker):
    """A tracker that records nothing: ``--no-tracking``, tests, and measuring tracking overhead."""

    enabled = False

    def check_available(self) -> None:  # noqa: D102
        return None

    def start_study(  # noqa: D102
        self,
        study_name: str,
        *,
        tags: dict[str, str] | None = None,
        objective: str | None = None,
        direction: str | None = None,
        headline: Sequence[str] = (),
        run_id: str | None = None,
    ) -> str:
        return ""

    def log_study_inputs(self, **kwargs: Any) -> None:  # noqa: D102
        return None

    def start_trial(self, trial_number: int, *, tags: dict[str, str] | None = None) -> str:  # noqa: D102
        return ""

    def end_trial(self, run_id: str, state: str, **kwargs: Any) -> None:  # noqa: D102
        return None

    def log_study_summary(self, trials_csv: Path, figures: dict[str, Any]) -> None:  # noqa: D102
        return None

    def end_study(self, status: str = "FINISHED") -> None:  # noqa: D102
        return None

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:  # noqa: D102
        return None

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:  # noqa: D102
        return None

    def log_evaluation(self, run_id: str, **kwargs: Any) -> None:  # noqa: D102
        return None

    def log_model(self, run_id: str, model: Any, **kwargs: Any) -> str | None:  # noqa: D102
        return None


__all__ = [
    "TRIAL_STATES",
    "NullTracker",
    "StudyTracker",
    "Tracker",
    "TrialTracker",
    "as_figure",
    "to_plain",
]
