"""Downloading what a promotion checks: a run's files and a logged model's files.

Each download answers None when the file is missing or unreadable (logged as a warning): the
caller decides whether that refuses the promotion (a predictions file the ledger recorded) or
only leaves a card's fact "not recorded" (the model's ``requirements.txt``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from clot_hpo.tracking import study_reader
from clot_hpo.tracking.store import MlflowClient, MlflowException
from clot_hpo.util import first_line

log = logging.getLogger("clot_hpo.registry")

TEST_PREDICTIONS = "test_predictions.csv"
VAL_PREDICTIONS = "val_predictions.csv"
MODEL_FILE = "data/model.keras"  # inside the logged MLflow model (tracking/keras_file_flavor.py)
REQUIREMENTS_FILE = "requirements.txt"  # inside the logged MLflow model


def download_run_file(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    """An artifact of a run, or None when the run has no such file or it cannot be read (logged)."""
    try:
        return study_reader.download_run_file(client, run_id, path, dst)
    except (MlflowException, OSError) as exc:
        log.warning("promote: %s of run %s cannot be read: %s", path, run_id, first_line(exc))
        return None


def _download_model_member(
    client: MlflowClient, tracking_uri: str, model_id: str, member: str, dst: Path
) -> Path:
    import mlflow.artifacts

    location = client.get_logged_model(model_id).artifact_location
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/{member}", dst_path=str(dst), tracking_uri=tracking_uri
        )
    )


def download_model_file(client: MlflowClient, tracking_uri: str, model_id: str, dst: Path) -> Path | None:
    """The logged model's ``data/model.keras``, downloaded into ``dst`` (None when unreadable)."""
    try:
        return _download_model_member(client, tracking_uri, model_id, MODEL_FILE, dst)
    except (MlflowException, OSError) as exc:
        log.warning("promote: the model file of %s cannot be read: %s", model_id, first_line(exc))
        return None


def model_requirements(client: MlflowClient, tracking_uri: str, model_id: str, dst: Path) -> list[str]:
    """The pinned requirements logged with the model, one per line (empty when unreadable)."""
    try:
        path = _download_model_member(client, tracking_uri, model_id, REQUIREMENTS_FILE, dst)
        text = path.read_text(encoding="utf-8")
    except (MlflowException, OSError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


__all__ = [
    "MODEL_FILE",
    "TEST_PREDICTIONS",
    "VAL_PREDICTIONS",
    "download_model_file",
    "download_run_file",
    "model_requirements",
]
