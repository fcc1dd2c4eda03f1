"""Experiment tracking: the tracker interfaces, the no-op tracker and the MLflow tracker.

The study process calls a :class:`StudyTracker`; a trial records through a
:class:`TrialTracker`; :class:`Tracker` is both (:class:`NullTracker` records nothing). The
write path is this package's end to end: a trial's process spools what it records
(:mod:`~clot_hpo.tracking.spool`), the study process's forwarder
(:mod:`~clot_hpo.tracking.trial_run`) opens, feeds and closes the trial's run on the upload
queue (:mod:`~clot_hpo.tracking.background`), and :class:`~clot_hpo.tracking.mlflow_tracker.
MlflowTracker` writes to MLflow::

    tracker = tracker_from_config(cfg.tracking, experiment_name=cfg.study_name)

MLflow is imported only when an MLflow tracker is built, so the search and the tests that
use :class:`NullTracker` never pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clot_hpo.tracking.base import (
    TRIAL_STATES,
    NullTracker,
    StudyTracker,
    Tracker,
    TrialTracker,
)

if TYPE_CHECKING:
    from clot_hpo.config.schema import TrackingConfig


def tracker_from_config(cfg: TrackingConfig, *, experiment_name: str, enabled: bool = True) -> Tracker:
    """The tracker an experiment config asks for: MLflow, or nothing (``--no-tracking``).

    Args:
        cfg: the ``tracking`` section (URI, artifact root, experiment, whether to log models).
        experiment_name: the experiment when ``cfg.experiment`` is not set (the study name).
        enabled: False (``--no-tracking``) gives the no-op tracker.

    Raises:
        ConfigError: an empty tracking URI or experiment name.
    """
    if not enabled:
        return NullTracker()
    from clot_hpo.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(
        tracking_uri=cfg.uri,
        experiment_name=cfg.experiment or experiment_name,
        artifact_root=cfg.artifact_root,
        log_models=cfg.log_model,
    )


__all__ = [
    "TRIAL_STATES",
    "NullTracker",
    "StudyTracker",
    "Tracker",
    "TrialTracker",
    "tracker_from_config",
]
