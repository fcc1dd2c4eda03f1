"""The tracker registry: names, the factory and the config entry point."""

from __future__ import annotations

import pytest

from clot_hpo.config import TrackingConfig
from clot_hpo.errors import ConfigError
from clot_hpo.tracking import NullTracker, create_tracker, list_trackers, tracker_from_config


def test_list_trackers() -> None:
    assert list_trackers() == ["mlflow", "null"]


def test_unknown_kind_names_it_and_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        create_tracker("wandb")
    assert "wandb" in str(err.value) and "mlflow" in str(err.value) and "null" in str(err.value)


def test_null_tracker_from_the_factory_and_when_disabled() -> None:
    assert isinstance(create_tracker("null"), NullTracker)
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
    with pytest.raises(ConfigError, match="URI"):
        create_tracker("mlflow", tracking_uri="", experiment_name="e")
    with pytest.raises(ConfigError, match="experiment"):
        create_tracker("mlflow", tracking_uri="sqlite:///m.db", experiment_name="")
