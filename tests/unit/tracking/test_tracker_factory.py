"""The tracker an experiment config asks for: MLflow, or the one that records nothing."""

from __future__ import annotations

import pytest

from clot_hpo.config import TrackingConfig
from clot_hpo.errors import ConfigError
from clot_hpo.tracking import NullTracker, tracker_from_config


def test_null_tracker_when_disabled() -> None:
    assert isinstance(tracker_from_config(TrackingConfig(), experiment_name="s", enabled=False), NullTracker)


def test_mlflow_tracker_from_config_uses_the_config_experiment_first() -> None:
    from clot_hpo.tracking.mlflow_tracker import MlflowTracker

    cfg = TrackingConfig(uri="sqlite:///x/mlflow.db", artifact_root="x/artifacts", log_model=False)
    tracker = tracker_from_config(cfg, experiment_name="study-a")
    assert isinstance(tracker, MlflowTracker)
    assert (tracker.tracking_uri, tracker.experiment_name, tracker.artifact_root, tracker.log_models) == (
        "sqlite:///x/mlflow.db",
        "study-a",
        "x/artifacts",
        False,
    )
    named = tracker_from_config(cfg.model_copy(update={"experiment": "shared"}), experiment_name="study-a")
    assert named.experiment_name == "shared"


def test_empty_uri_or_experiment_is_a_config_error() -> None:
    from clot_hpo.tracking.mlflow_tracker import MlflowTracker

    with pytest.raises(ConfigError, match="URI"):
        MlflowTracker(tracking_uri="", experiment_name="e")
    with pytest.raises(ConfigError, match="experiment"):
        MlflowTracker(tracking_uri="sqlite:///m.db", experiment_name="")
