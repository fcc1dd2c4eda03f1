"""A study as its MLflow experiment recorded it, read back for ``clot-hpo report``.

The report is computed from what tracking stored, never from the machine that ran the study:
the study's parent run (its tags, ``config.yaml``, ``trials.csv``, the split manifest and the
data report under ``data/``) and each trial's child run (params, metrics, tags and its
predictions files ``val_predictions.csv`` / ``test_predictions.csv``). Runs are found by the
tags of :mod:`clot_hpo.tracking.tags`. This module also stores the finished report back on the
parent run: only tracking talks to MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clot_hpo.errors import ConfigError
from clot_hpo.tracking.store import MlflowClient, open_client, quote, search_all_runs
from clot_hpo.tracking.tags import (
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_DIGEST,
    TAG_DIRECTION,
    TAG_OBJECTIVE,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
)
from clot_hpo.util import redact_url

log = logging.getLogger("clot_hpo.tracking")

# The study run's files the report reads, when present (older studies lack some).
STUDY_FILES = ("config.yaml", "trials.csv", "data/split_manifest.csv", "data/data_report.json")
# MLflow run status -> Optuna state, for a run that never got its state tag (a crash).
STATE_OF_STATUS = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL", "RUNNING": "RUNNING"}
REPORT_FOLDER = "report"


@dataclass
class TrialRecord:
    """One trial's run: what it logged, and which files it holds at the top of its artifacts."""

    run_id: str
    number: int
    state: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_ms: int | None
    end_ms: int | None
    files: set[str] = field(default_factory=set)

    @property
    def backbone(self) -> str | None:
        """The backbone the trial trained (its ``backbone`` param), if it got that far."""
        return self.params.get("backbone")

    @property
    def seconds(self) -> float | None:
        """Wall time from the run's start to its end."""
        if self.start_ms is None or self.end_ms is None:
            return None
        return max(0.0, (self.end_ms - self.start_ms) / 1000.0)


@dataclass
class StudyRecord:
    """A study read back from MLflow (see the module docstring).

    Attributes:
        files: the study run's files of :data:`STUDY_FILES` that exist, downloaded under
            ``folder`` (name -> local path).
    """

    tracking_uri: str
    experiment: str
    experiment_id: str
    study: str
    run_id: str
    tags: dict[str, str]
    status: str
    start_ms: int | None
    end_ms: int | None
    trials: list[TrialRecord]
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def objective(self) -> str | None:
        """The metric the study optimized, as trial runs log it (``val_auc``)."""
        return self.tags.get(TAG_OBJECTIVE)

    @property
    def direction(self) -> str:
        """Optuna's direction for :attr:`objective` (``maximize`` when not recorded)."""
        return self.tags.get(TAG_DIRECTION) or "maximize"

    @property
    def digest(self) -> str | None:
        """The dataset's content digest (sha256)."""
        return self.tags.get(TAG_DIGEST)

    @property
    def seconds(self) -> float | None:
        """Wall time of the study run (from its start to its end, or to its last trial's end)."""
        end = self.end_ms or max((t.end_ms or 0 for t in self.trials), default=0) or None
        if self.start_ms is None or end is None:
            return None
        return max(0.0, (end - self.start_ms) / 1000.0)


def _experiment(client: MlflowClient, tracking_uri: str, name: str) -> Any:
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = sorted(e.name for e in client.search_experiments(max_results=200) if e.name != "Default")
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none"
        why = "is deleted" if experiment is not None else "does not exist"
        raise ConfigError(
            f"MLflow experiment {name!r} at {redact_url(tracking_uri)} {why} (experiments there: {shown})"
        )
    return experiment


def read_study(tracking_uri: str, experiment: str, *, folder: str | Path) -> StudyRecord:
    """Read the latest study of ``experiment``: its run, its trials' runs, its files.

    Args:
        tracking_uri: the MLflow store (``sqlite:///...``, ``http://...``).
        experiment: the MLflow experiment (the study name, unless ``tracking.experiment``).
        folder: where the study run's files are downloaded.

    Raises:
        ConfigError: no such experiment, or it holds no study run.
        TrackingUnavailable: the server does not answer.
    """
    client = open_client(tracking_uri)
    exp = _experiment(client, tracking_uri, experiment)
    exp_id = str(exp.experiment_id)
    studies = sorted(
        search_all_runs(client, exp_id, f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}'"),
        key=lambda r: r.info.start_time or 0,
    )
    if not studies:
        raise ConfigError(
            f"MLflow experiment {experiment!r} at {redact_url(tracking_uri)} holds no clot-hpo study run "
            "(run `clot-hpo search` first)"
        )
    parent = studies[-1]
    if len(studies) > 1:
        log.info(
            "experiment %r holds %d studies; reporting the latest, %r",
            experiment,
            len(studies),
            parent.data.tags.get(TAG_STUDY),
        )
    trials = []
    for run in search_all_runs(
        client,
        exp_id,
        f"tags.`{TAG_PARENT}` = {quote(parent.info.run_id)} and tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'",
    ):
        tags = dict(run.data.tags)
        number = tags.get(TAG_TRIAL_NUMBER, "")
        if not number.lstrip("-").isdigit():
            continue
        trials.append(
            TrialRecord(
                run_id=run.info.run_id,
                number=int(number),
                state=tags.get(TAG_TRIAL_STATE) or STATE_OF_STATUS.get(run.info.status, run.info.status),
                params=dict(run.data.params),
                metrics=dict(run.data.metrics),
                tags=tags,
                start_ms=run.info.start_time,
                end_ms=run.info.end_time,
                files={a.path for a in client.list_artifacts(run.info.run_id)},
            )
        )
    trials.sort(key=lambda t: t.number)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = StudyRecord(
        tracking_uri=tracking_uri,
        experiment=experiment,
        experiment_id=exp_id,
        study=parent.data.tags.get(TAG_STUDY) or parent.info.run_name or experiment,
        run_id=parent.info.run_id,
        tags=dict(parent.data.tags),
        status=parent.info.status,
        start_ms=parent.info.start_time,
        end_ms=parent.info.end_time,
        trials=trials,
        folder=folder,
    )
    present = {a.path for a in client.list_artifacts(parent.info.run_id)}
    present |= {a.path for a in client.list_artifacts(parent.info.run_id, "data")}
    for name in STUDY_FILES:
        if name in present:
            local = client.download_artifacts(parent.info.run_id, name, str(folder))
            record.files[name] = Path(local)
    return record


def download_trial_file(record: StudyRecord, trial: TrialRecord, name: str) -> Path | None:
    """A trial run's file (``test_predictions.csv``), downloaded; None when the run lacks it."""
    if name not in trial.files:
        return None
    dest = record.folder / "trials" / str(trial.number)
    dest.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=record.tracking_uri, registry_uri=record.tracking_uri)
    return Path(client.download_artifacts(trial.run_id, name, str(dest)))


def log_report(record: StudyRecord, paths: list[Path]) -> str:
    """Attach the report's files to the study run under ``report/``; return that folder's URI."""
    client = MlflowClient(tracking_uri=record.tracking_uri, registry_uri=record.tracking_uri)
    for path in paths:
        client.log_artifact(record.run_id, str(path), REPORT_FOLDER)
    return f"runs:/{record.run_id}/{REPORT_FOLDER}"


__all__ = [
    "REPORT_FOLDER",
    "STUDY_FILES",
    "StudyRecord",
    "TrialRecord",
    "download_trial_file",
    "log_report",
    "read_study",
]
