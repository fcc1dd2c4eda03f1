"""The one reader of a finished study, as its MLflow experiment recorded it.

``report``, ``promote`` and the model card read a study back through :func:`read_study` and
nothing else; it returns a :class:`FinishedStudy`, typed and validated, never raw dicts:

- the study's parent run (its tags, status and times);
- ``config.yaml`` as an :class:`~clot_hpo.config.schema.ExperimentConfig` (read through
  :mod:`clot_hpo.yaml_io`, validated, defaults applied by the schema);
- the split manifest (``data/split_manifest.csv``) as a frame, the data report
  (``data/data_report.json``) and the search's ``trials.csv``;
- each trial's child run as a :class:`TrialRecord` (params, metrics, tags), and its files
  (``val_predictions.csv``, ``test_predictions.csv``) downloaded when first asked for;
- when a ledger is passed in, what the Optuna storage records for each trial
  (:meth:`FinishedStudy.ledger_entry`): tracking does not import Optuna, so the search's
  ledger (:class:`clot_hpo.search.ledger.TrialLedger`) is handed in as a :class:`Ledger`.

The reader never uses the machine that ran the study. Runs are found by the tags of
:mod:`clot_hpo.tracking.tags`. This module also stores a finished report back on the
parent run: only tracking talks to MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from pydantic import ValidationError

from clot_hpo.config.schema import ExperimentConfig
from clot_hpo.errors import ConfigError
from clot_hpo.tracking.store import MlflowClient, MlflowException, open_client, quote, search_all_runs
from clot_hpo.tracking.tags import (
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_DIGEST,
    TAG_DIRECTION,
    TAG_OBJECTIVE,
    TAG_OPTUNA_STUDY,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
)
from clot_hpo.util import first_line, redact_url
from clot_hpo.yaml_io import describe_errors, read_yaml

log = logging.getLogger("clot_hpo.tracking")

CONFIG_FILE = "config.yaml"
TRIALS_FILE = "trials.csv"
MANIFEST_FILE = "data/split_manifest.csv"
DATA_REPORT_FILE = "data/data_report.json"
# The study run's files the reader downloads, when present (older studies lack some).
STUDY_FILES = (CONFIG_FILE, TRIALS_FILE, MANIFEST_FILE, DATA_REPORT_FILE)
# MLflow run status -> Optuna state, for a run that never got its state tag (a crash).
STATE_OF_STATUS = {"FINISHED": "COMPLETE", "KILLED": "PRUNED", "FAILED": "FAIL", "RUNNING": "RUNNING"}
REPORT_FOLDER = "report"


# ----- the ledger, as tracking sees it --------------------------------------------------------
class LedgerFacts(Protocol):
    """A trial as the Optuna storage records it (:class:`clot_hpo.search.ledger.LedgerEntry`)."""

    @property
    def state(self) -> str: ...  # noqa: D102
    @property
    def value(self) -> float | None: ...  # noqa: D102
    @property
    def run_id(self) -> str | None: ...  # noqa: D102
    @property
    def parent_run_id(self) -> str | None: ...  # noqa: D102
    @property
    def dataset_digest(self) -> str | None: ...  # noqa: D102
    @property
    def model_id(self) -> str | None: ...  # noqa: D102
    @property
    def model_sha256(self) -> str | None: ...  # noqa: D102
    @property
    def user_attrs(self) -> Mapping[str, Any]: ...  # noqa: D102
    def metric(self, name: str) -> float | None: ...  # noqa: D102
    def predictions_sha256(self, filename: str) -> str | None: ...  # noqa: D102


class Ledger(Protocol):
    """Where the trials a study really ran are recorded (:class:`clot_hpo.search.ledger.TrialLedger`).

    Tracking and the registry do not import Optuna: the command passes the search's ledger in.
    """

    def trial(self, study: str, number: int) -> LedgerFacts | None: ...  # noqa: D102


# ----- what the reader returns ----------------------------------------------------------------
@dataclass
class TrialRecord:
    """One trial's MLflow run: what it logged (the Optuna storage's record is a ``LedgerEntry``)."""

    run_id: str
    number: int
    state: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_ms: int | None
    end_ms: int | None

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

    @property
    def optuna_study(self) -> str | None:
        """The Optuna study that ran the trial, as the run's tags name it."""
        return self.tags.get(TAG_OPTUNA_STUDY) or self.tags.get(TAG_STUDY)


@dataclass
class FinishedStudy:
    """A study read back from MLflow (see the module docstring).

    Attributes:
        config: the study's resolved config, validated (None: not recorded, or not valid
            under this version's schema; :attr:`config_problem` says which).
        manifest: the split manifest (None: not recorded or unreadable).
        data_report: the data report (empty: not recorded).
        trials_table: the search's ``trials.csv`` (None: not recorded).
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
    config: ExperimentConfig | None = None
    config_problem: str | None = None
    manifest: pd.DataFrame | None = None
    data_report: dict[str, Any] = field(default_factory=dict)
    trials_table: pd.DataFrame | None = None
    ledger: Ledger | None = None

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

    @property
    def settings(self) -> ExperimentConfig:
        """The config to read the study's settings from: the recorded one, else the schema's defaults."""
        return self.config if self.config is not None else ExperimentConfig()

    def trial_file(self, trial: TrialRecord, name: str) -> Path | None:
        """A trial run's file (``test_predictions.csv``), downloaded once; None when the run lacks it."""
        return download_run_file(
            MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri),
            trial.run_id,
            name,
            self.folder / "trials" / str(trial.number),
        )

    def ledger_entry(self, trial: TrialRecord) -> LedgerFacts | None:
        """What the Optuna storage records for ``trial`` (None: no ledger passed, or no such trial)."""
        study = trial.optuna_study
        if self.ledger is None or not study:
            return None
        return self.ledger.trial(study, trial.number)


# ----- reading --------------------------------------------------------------------------------
def find_experiment(client: MlflowClient, tracking_uri: str, name: str) -> Any:
    """The MLflow experiment ``name``; a ConfigError naming the ones there when it is missing or deleted."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = sorted(e.name for e in client.search_experiments(max_results=200) if e.name != "Default")
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none"
        why = "is deleted" if experiment is not None else "does not exist"
        raise ConfigError(
            f"MLflow experiment {name!r} at {redact_url(tracking_uri)} {why} (experiments there: {shown})"
        )
    return experiment


def _study_run(
    client: MlflowClient, tracking_uri: str, experiment: str, exp_id: str, run_id: str | None
) -> Any:
    """The study's parent run: ``run_id``, else the experiment's latest study run."""
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise ConfigError(
                f"study run {run_id} at {redact_url(tracking_uri)} cannot be read: {first_line(exc)}"
            ) from exc
        if str(run.info.experiment_id) != exp_id:
            raise ConfigError(
                f"study run {run_id} must belong to experiment {experiment!r} (id {exp_id}), but it is in "
                f"experiment id {run.info.experiment_id}"
            )
        if run.data.tags.get(TAG_ROLE) != ROLE_STUDY:
            raise ConfigError(
                f"run {run_id} must be a clot-hpo study run (tag {TAG_ROLE} = {ROLE_STUDY}), but its tag is "
                f"{run.data.tags.get(TAG_ROLE)!r}"
            )
        return run
    studies = sorted(
        search_all_runs(client, exp_id, f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}'"),
        key=lambda r: r.info.start_time or 0,
    )
    if not studies:
        raise ConfigError(
            f"MLflow experiment {experiment!r} at {redact_url(tracking_uri)} holds no clot-hpo study run "
            "(run `clot-hpo search` first)"
        )
    if len(studies) > 1:
        log.info(
            "experiment %r holds %d studies; reading the latest, %r",
            experiment,
            len(studies),
            studies[-1].data.tags.get(TAG_STUDY),
        )
    return studies[-1]


def _trials(client: MlflowClient, exp_id: str, parent_id: str) -> list[TrialRecord]:
    trials = []
    for run in search_all_runs(
        client, exp_id, f"tags.`{TAG_PARENT}` = {quote(parent_id)} and tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'"
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
            )
        )
    return sorted(trials, key=lambda t: t.number)


def download_run_file(client: MlflowClient, run_id: str, path: str, dst: Path) -> Path | None:
    """An artifact of a run, downloaded into ``dst``; None when the run has no such file."""
    folder = str(Path(path).parent) if "/" in path else None
    if not any(a.path == path for a in client.list_artifacts(run_id, folder)):
        return None
    local = dst / path
    if local.is_file():  # downloaded before
        return local
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst)))


def _config(path: Path | None) -> tuple[ExperimentConfig | None, str | None]:
    """The recorded config, validated by the schema; or None and why."""
    if path is None:
        return None, None
    try:
        return ExperimentConfig.model_validate(read_yaml(path, what="study config")), None
    except ValidationError as exc:
        problem = f"{CONFIG_FILE}: " + "; ".join(describe_errors(exc, model=ExperimentConfig))
    except ConfigError as exc:
        problem = str(exc)
    log.warning(
        "the study's %s is not valid here, so its settings read as defaults: %s", CONFIG_FILE, problem
    )
    return None, problem


def _data_report(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("the study's %s cannot be read: %s", DATA_REPORT_FILE, first_line(exc))
        return {}
    return dict(loaded) if isinstance(loaded, dict) else {}


def _frame(path: Path | None, **read_csv: Any) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        return pd.read_csv(path, **read_csv)
    except (OSError, ValueError) as exc:
        log.warning("the study's %s cannot be read: %s", path.name, first_line(exc))
        return None


def read_study(
    tracking_uri: str,
    experiment: str,
    *,
    folder: str | Path,
    run_id: str | None = None,
    ledger: Ledger | None = None,
) -> FinishedStudy:
    """Read a finished study of ``experiment``: its run, its files, its trials' runs.

    Args:
        tracking_uri: the MLflow store (``sqlite:///...``, ``http://...``).
        experiment: the MLflow experiment (the study name, unless ``tracking.experiment``).
        folder: where the study run's files (and later the trials' files) are downloaded.
        run_id: the study run to read; default the experiment's latest study run.
        ledger: the Optuna storage's record of the trials, for :meth:`FinishedStudy.ledger_entry`.

    Raises:
        ConfigError: no such experiment, it holds no study run, or ``run_id`` is not one.
        TrackingUnavailable: the server does not answer.
    """
    client = open_client(tracking_uri)
    exp_id = str(find_experiment(client, tracking_uri, experiment).experiment_id)
    parent = _study_run(client, tracking_uri, experiment, exp_id, run_id)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    present = {a.path for a in client.list_artifacts(parent.info.run_id)}
    present |= {a.path for a in client.list_artifacts(parent.info.run_id, "data")}
    files = {
        name: Path(client.download_artifacts(parent.info.run_id, name, str(folder)))
        for name in STUDY_FILES
        if name in present
    }
    config, problem = _config(files.get(CONFIG_FILE))
    return FinishedStudy(
        tracking_uri=tracking_uri,
        experiment=experiment,
        experiment_id=exp_id,
        study=parent.data.tags.get(TAG_STUDY) or parent.info.run_name or experiment,
        run_id=parent.info.run_id,
        tags=dict(parent.data.tags),
        status=parent.info.status,
        start_ms=parent.info.start_time,
        end_ms=parent.info.end_time,
        trials=_trials(client, exp_id, parent.info.run_id),
        folder=folder,
        files=files,
        config=config,
        config_problem=problem,
        manifest=_frame(files.get(MANIFEST_FILE), dtype={"sha256": str, "key": str}),
        data_report=_data_report(files.get(DATA_REPORT_FILE)),
        trials_table=_frame(files.get(TRIALS_FILE)),
        ledger=ledger,
    )


def log_report(study: FinishedStudy, paths: list[Path]) -> str:
    """Attach the report's files to the study run under ``report/``; return that folder's URI."""
    client = MlflowClient(tracking_uri=study.tracking_uri, registry_uri=study.tracking_uri)
    for path in paths:
        client.log_artifact(study.run_id, str(path), REPORT_FOLDER)
    return f"runs:/{study.run_id}/{REPORT_FOLDER}"


__all__ = [
    "download_run_file",
    "find_experiment",
    "CONFIG_FILE",
    "DATA_REPORT_FILE",
    "MANIFEST_FILE",
    "REPORT_FOLDER",
    "STUDY_FILES",
    "TRIALS_FILE",
    "FinishedStudy",
    "Ledger",
    "LedgerFacts",
    "TrialRecord",
    "log_report",
    "read_study",
]
