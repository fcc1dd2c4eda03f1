"""Setting a study up: config, search spaces, data, storage, the tracker; then its trial loop.

``run_search`` is the whole of ``clot-hpo search``: it validates everything cheap first
(config, search spaces, tracking server, data), opens the study and its tracking run, then
hands over to the trial loop (:class:`~clot_hpo.search.optimize.StudyRunner`), which asks
Optuna for one trial at a time and runs each in a fresh child process
(:mod:`clot_hpo.search.trial.process`). ``prepare_study`` is the setup alone
(``clot-hpo prepare-study``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from clot_hpo.config import ExperimentConfig, save_resolved
from clot_hpo.errors import ConfigError, FatalError, Preempted
from clot_hpo.evaluate.catalogue import headline_keys
from clot_hpo.search.fidelity import study_rung_epochs
from clot_hpo.search.folds import check_study_folds, study_folds
from clot_hpo.search.ledger import STUDY_ATTR_RUN_ID
from clot_hpo.search.objectives import get_objective
from clot_hpo.search.optimize import StudyRunner
from clot_hpo.search.progress import print_top_trials
from clot_hpo.search.pruners import create_pruner
from clot_hpo.search.samplers import create_sampler
from clot_hpo.search.storage import (
    open_storage,
    redact_url,
    study_lock,
)
from clot_hpo.tracking.base import StudyTracker

log = logging.getLogger(__name__)

STUDIES_DIR = Path("mlruns") / "studies"
# How long a stopping worker waits for its last checkpoint upload (MLflow's own retries included).
CHECKPOINT_UPLOAD_WAIT_SECONDS = 60.0


@dataclass
class SearchOutcome:
    """What a ``clot-hpo search`` run did, for the CLI's closing lines and for tests."""

    study_name: str
    storage: str
    stop_reason: str
    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None
    elapsed: float = 0.0


def resolve_spaces(config: ExperimentConfig, *, base: Path | None = None) -> dict[str, str]:
    """Search-space file per backbone: ``search.search_spaces`` or ``search_spaces/<name>.yaml``."""
    from clot_hpo.search_space import default_search_space_path, load_search_space

    unknown = set(config.search.search_spaces) - set(config.search.backbones)
    if unknown:
        raise ConfigError(
            f"search.search_spaces: {sorted(unknown)} are not in search.backbones {config.search.backbones}"
        )
    spaces: dict[str, str] = {}
    for name in config.search.backbones:
        given = config.search.search_spaces.get(name)
        path = Path(given) if given else default_search_space_path(name)
        if given and not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        space = load_search_space(path)  # validates: ConfigError names file and key
        if space.backbone != name:
            raise ConfigError(
                f"{path}: backbone must be {name!r} for search.search_spaces.{name}, "
                f"but got {space.backbone!r}"
            )
        spaces[name] = str(path.resolve())
    return spaces


def create_or_load_study(config: ExperimentConfig, storage: Any) -> optuna.Study:
    """Create the study, or load it to resume; refuse a direction that changed."""
    objective = get_objective(config.search.objective)
    study = optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        sampler=create_sampler(config.search.sampler, seed=config.seed),
        pruner=create_pruner(
            config.search.pruner, max_epochs=config.training.epochs, rung_epochs=study_rung_epochs(config)
        ),
        direction="maximize" if objective.direction == "maximize" else "minimize",
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("objective")
    if recorded is None:
        study.set_user_attr("objective", objective.name)
    elif recorded != objective.name:
        raise ConfigError(
            f"search.objective: study {config.study_name!r} optimizes {recorded!r}, but got "
            f"{objective.name!r}; use another --study-name"
        )
    return study


def open_study(config: ExperimentConfig, spaces: dict[str, str]) -> tuple[optuna.Study, list[dict[str, Any]]]:
    """Open the storage, create or load the study and enqueue its defaults trials once.

    Returns:
        The study, and the params of the defaults trials this call enqueued (empty when the
        study was prepared before: by ``clot-hpo prepare-study`` or another worker).
    """
    from clot_hpo.search.defaults import enqueue_default_trials

    storage = open_storage(
        config.search.storage,
        heartbeat_interval=config.search.heartbeat_interval,
        grace_period=config.search.grace_period,
        max_retry=config.search.max_retry,
    )
    study = create_or_load_study(config, storage)
    check_study_folds(study, config)  # one study, one way of validating its trials
    if not config.search.defaults_first:
        return study, []
    # Under the study's lock: workers starting together on an empty study enqueue them once.
    lock = study_lock(config.search.storage, config.study_name)
    return study, enqueue_default_trials(study, spaces, lock=lock)


def open_study_run(study: optuna.Study, storage_url: str, tracker: StudyTracker, **start: Any) -> str:
    """Open the study's MLflow run (``tracker.start_study(**start)``): one per study, however many workers.

    The Optuna storage is the ledger of which run that is: under the study's lock, each worker
    reopens the run the study records (:data:`~clot_hpo.search.ledger.STUDY_ATTR_RUN_ID`), or
    creates one and records it. Workers started together thus wait for the first, then join
    its run; a tracking server that cannot be reached records nothing, and a later worker tries.
    """
    with study_lock(storage_url, study.study_name):
        recorded = study.user_attrs.get(STUDY_ATTR_RUN_ID)
        run_id = tracker.start_study(
            study.study_name, run_id=recorded if isinstance(recorded, str) else None, **start
        )
        if run_id and run_id != recorded:
            study.set_user_attr(STUDY_ATTR_RUN_ID, run_id)
    return run_id


@dataclass
class PreparedStudy:
    """What ``clot-hpo prepare-study`` did, for its closing lines and for tests."""

    study_name: str
    n_images: int
    trials_on_record: int
    enqueued: list[dict[str, Any]] = field(default_factory=list)


def prepare_study(
    config: ExperimentConfig, *, tracking: bool = True, base_dir: Path | None = None
) -> PreparedStudy:
    """Validate everything a worker needs, then create the study and enqueue its defaults once.

    What a cluster runs once before its workers (deploy/kubernetes/base/prepare-job.yaml): the
    config and search spaces, the tracking server and its login, the data (scan, validation,
    split), then the study. Running it again changes nothing.

    Raises:
        ConfigError: bad config, search space, data or storage (exit 2).
        TrackingUnavailable: the tracking server cannot be reached or refused the login.
    """
    from clot_hpo.data.prepare import prepare_data
    from clot_hpo.tracking import tracker_from_config

    spaces = resolve_spaces(config, base=base_dir)
    out_dir = STUDIES_DIR / config.study_name
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = tracker_from_config(
        config.tracking, experiment_name=config.tracking.experiment or config.study_name, enabled=tracking
    )
    tracker.check_available()
    prepared = prepare_data(config.data, seed=config.seed, out_dir=out_dir / "data")
    study, enqueued = open_study(config, spaces)
    return PreparedStudy(
        study_name=config.study_name,
        n_images=len(prepared.manifest),
        trials_on_record=len(study.get_trials(deepcopy=False)),
        enqueued=enqueued,
    )


def run_search(
    config: ExperimentConfig,
    *,
    tracking: bool = True,
    console: Console | None = None,
    base_dir: Path | None = None,
) -> SearchOutcome:
    """Launch or resume the study that ``config`` describes and run it to a budget."""
    from clot_hpo.data.prepare import prepare_data
    from clot_hpo.search.summary import summarize_study
    from clot_hpo.tracking import tracker_from_config

    console = console or Console(soft_wrap=True)
    # Optuna logs every trial's parameters at INFO and a failed trial's traceback at WARNING;
    # our progress bar, per-trial lines and `fail_reason` say it better (--debug shows all).
    if not logging.getLogger("clot_hpo").isEnabledFor(logging.DEBUG):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    started = time.monotonic()
    study_name = config.study_name
    out_dir = STUDIES_DIR / study_name
    out_dir.mkdir(parents=True, exist_ok=True)
    spaces = resolve_spaces(config, base=base_dir)
    save_resolved(config, out_dir / "config.resolved.yaml")

    experiment = config.tracking.experiment or study_name
    tracker = tracker_from_config(config.tracking, experiment_name=experiment, enabled=tracking)
    tracker.check_available()  # before any compute: an unreachable server is exit 2

    prepared = prepare_data(config.data, seed=config.seed, out_dir=out_dir / "data")
    manifest_path = out_dir / "trial_manifest.csv"
    # Written atomically: workers sharing a folder must never hand a trial half a file.
    partial = manifest_path.with_suffix(f".{os.getpid()}.tmp")
    trial_manifest = prepared.manifest[["path", "label", "split", "sha256"]].copy()
    if config.search.cv_folds:  # drawn once per study: every trial validates on the same folds
        trial_manifest["fold"] = study_folds(config, prepared.manifest)
    trial_manifest.to_csv(partial, index=False)
    os.replace(partial, manifest_path)

    study, _ = open_study(config, spaces)
    resumed = len(study.trials)
    console.print(
        f"[bold]study[/] {study_name} · {config.search.sampler}/{config.search.pruner} · "
        f"objective {config.search.objective} · backbones {', '.join(config.search.backbones)}"
        + (f" · resuming with {resumed} trials on record" if resumed else "")
    )
    runner = StudyRunner(
        config,
        study=study,
        tracker=tracker,
        spaces=spaces,
        manifest_path=manifest_path,
        out_dir=out_dir,
        console=console,
        data_digest=prepared.digest,
    )
    # Queued like everything else the tracker does from here on: it overlaps the first trial.
    runner.parent_run = runner.uploads.submit(
        "open the study's run",
        open_study_run,
        study,
        config.search.storage,
        tracker,
        tags={"optuna.storage": redact_url(config.search.storage)},
        # Recorded for `promote` and the run's headline: Optuna's own direction.
        objective=runner.objective.history_key,
        direction=study.direction.name.lower(),
        headline=headline_keys(),
    )
    runner.uploads.submit(
        "log the study's inputs",
        tracker.log_study_inputs,
        config=config.model_dump(mode="json"),
        # The files themselves: their key order carries meaning (a parent before its children).
        search_spaces=dict(spaces),
        # Content hashes, labels and splits unless tracking.log_manifest is `full`: file names
        # and group ids can carry patient identifiers (the study folder keeps the full one).
        manifest_path=prepared.tracked_manifest(config.tracking.log_manifest),
        dataset_digest=prepared.digest,
    )
    status = "FINISHED"
    try:
        stop_reason = runner.run()
    except (KeyboardInterrupt, Preempted):
        status, stop_reason = "KILLED", "interrupted"
        raise
    except FatalError:
        status = "FAILED"
        raise
    finally:
        try:
            runner.finish_uploads()  # every trial's results reach the tracker before the study ends
            # A stopped trial's last checkpoint reaches the server before the worker exits.
            runner.checkpoints.close(timeout=CHECKPOINT_UPLOAD_WAIT_SECONDS)
            summarize_study(study, tracker=tracker, out_dir=out_dir)
        finally:
            tracker.end_study(status)
    console.print(f"[bold]stopped:[/] {stop_reason}")
    print_top_trials(console, study, runner.objective)
    counts = {
        s.name: sum(t.state == s for t in study.trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    best = _best(study)
    return SearchOutcome(
        study_name=study_name,
        storage=config.search.storage,
        stop_reason=stop_reason,
        out_dir=out_dir,
        counts=counts,
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        elapsed=time.monotonic() - started,
    )


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None
