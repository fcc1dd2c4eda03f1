"""Issue 20, item 6: images of the data leave the machine only when the config says so.

The failure gallery (Grad-CAM overlays of test images) is on for a store that keeps its
artifacts on this machine and off by default for a remote MLflow server or object store,
unless ``evaluation.explanations: true`` asks for it.
"""

from __future__ import annotations

from typing import Any

import pytest

from clot_hpo.config import ExperimentConfig


@pytest.mark.parametrize(
    ("tracking", "explanations", "logged"),
    [
        ({}, "auto", True),  # sqlite:///mlruns/mlflow.db, artifacts in mlruns/artifacts
        ({"uri": "postgresql+psycopg2://u@db/mlflow"}, "auto", True),  # artifacts still in a local folder
        ({"uri": "http://127.0.0.1:5000"}, "auto", True),  # `make mlflow-server`
        ({"uri": "http://[::1]:5000"}, "auto", True),
        ({"uri": "http://mlflow.lab.example:5000"}, "auto", False),
        ({"uri": "https://user:pw@mlflow.lab.example"}, "auto", False),
        ({"artifact_root": "s3://bucket/mlruns"}, "auto", False),
        ({"uri": "http://mlflow.lab.example:5000"}, True, True),  # asked for
        ({}, False, False),
    ],
)
def test_the_failure_gallery_leaves_the_machine_only_when_the_config_says_so(
    tracking: dict[str, Any], explanations: bool | str, logged: bool
) -> None:
    config = ExperimentConfig.model_validate(
        {"tracking": tracking, "evaluation": {"explanations": explanations}}
    )
    assert config.logs_explanations is logged


def test_auto_is_the_default() -> None:
    assert ExperimentConfig().evaluation.explanations == "auto"
    assert (
        ExperimentConfig.model_validate({"tracking": {"uri": "http://10.0.0.7:5000"}}).logs_explanations
        is False
    )
