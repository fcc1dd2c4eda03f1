"""Experiment tracking: the tracker interfaces, no-op trackers and the MLflow tracker.

The study process calls a :class:`StudyTracker`; a trial records through a
:class:`TrialTracker`; :class:`Tracker` is both (:class:`NullTracker` records nothing).

Trackers are built by name through a small registry::

    tracker = create_tracker("mlflow", tracking_uri="sqlite:///mlruns/mlflow.db",
                             experiment_name="clot-study")
    tracker = tracker_from_config(cfg.tracking, experiment_name=cfg.study_name)

MLflow is imported only when an MLflow tracker is built, so the search and the tests that
use :class:`NullTracker` never pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clot_hpo.errors import ConfigError
from clot_hpo.tracking.base import (
    TRIAL_STATES,
    NullStudyTracker,
    NullTracker,
    NullTrialTracker,
    StudyTracker,
    Tracker,
    TrialTracker,
)

if TYPE_CHECKING:
    from clot_hpo.config.schema import TrackingConfig


def _mlflow_factory(**kwargs: Any) -> Tracker:
    from clot_hpo.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(**kwargs)


def _null_factory(**kwargs: Any) -> Tracker:
    return NullTracker()


_TRACKERS: dict[str, Callable[..., Tracker]] = {
    "mlflow": _mlflow_factory,
    "null": _null_factory,
}


def list_trackers() -> list[str]:
    """Names accepted by :func:`create_tracker`."""
    return sorted(_TRACKERS)


def create_tracker(kind: str, **kwargs: Any) -> Tracker:
    """Build a tracker by name (``"mlflow"`` takes :class:`MlflowTracker`'s arguments).

    Raises:
        ConfigError: ``kind`` is not a known tracker.
    """
    try:
        factory = _TRACKERS[kind]
    except KeyError:
        raise ConfigError(f"tracker must be one of {list_trackers()}, but got {kind!r}") from None
    return factory(**kwargs)


def tracker_from_config(cfg: TrackingConfig, *, experiment_name: str, enabled: bool = True) -> Tracker:
    """The tracker an experiment config asks for.

    Args:
        cfg: the ``tracking`` section (URI, artifact root, experiment, whether to log models).
        experiment_name: the experiment when ``cfg.experiment`` is not set (the study name).
        enabled: False (``--no-tracking``) gives the no-op tracker.
    """
    if not enabled:
        return create_tracker("null")
    return create_tracker(
        "mlflow",
        tracking_uri=cfg.uri,
        experiment_name=cfg.experiment or experiment_name,
        artifact_root=cfg.artifact_root,
        log_models=cfg.log_model,
    )


__all__ = [
    "TRIAL_STATES",
    "NullStudyTracker",
    "NullTracker",
    "NullTrialTracker",
    "StudyTracker",
    "Tracker",
    "TrialTracker",
    "create_tracker",
    "list_trackers",
    "tracker_from_config",
]
