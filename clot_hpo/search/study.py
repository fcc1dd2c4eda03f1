"""The study process: budgets, one child process per trial, resume, progress and summary.

``run_search`` is the whole of ``clot-hpo search``: it validates everything cheap first
(config, search spaces, tracking server, data), then asks Optuna for one trial at a time
and runs each in a fresh child process (:mod:`clot_hpo.search.trial_process`), started
while the previous trial trains (:mod:`clot_hpo.search.worker_process`). The budget
counts COMPLETE and PRUNED trials over the whole study, so rerunning the same command
resumes it and several workers on one storage share it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from clot_hpo.checkpoint import CHECKPOINT_FILE
from clot_hpo.config import ExperimentConfig, save_resolved
from clot_hpo.errors import ConfigError, FatalError, Preempted, TrialFailed
from clot_hpo.evaluate.catalogue import headline_keys
from clot_hpo.search.fidelity import study_rung_epochs
from clot_hpo.search.folds import check_study_folds, study_folds, trial_epochs
from clot_hpo.search.ledger import ATTR_DIGEST, ATTR_PARENT_RUN_ID, ATTR_RUN_ID, record_model_id
from clot_hpo.search.objectives import Objective, get_objective
from clot_hpo.search.oom_retry import run_with_oom_retry
from clot_hpo.search.optuna_compat import failed_elsewhere, trial_id
from clot_hpo.search.preemption import (
    PREEMPTED_ATTR,
    TAG_RESUMED_FROM,
    CheckpointRules,
    GracefulStop,
    Resumer,
    epochs_spent,
)
from clot_hpo.search.progress import StudyProgress, print_top_trials
from clot_hpo.search.pruners import create_pruner
from clot_hpo.search.samplers import create_sampler
from clot_hpo.search.storage import (
    call_retrying_storage,
    open_storage,
    redact_url,
    retried_from,
    study_lock,
)
from clot_hpo.search.task import PRELOAD_STORAGE_ENV, TrialOutcome, TrialTask
from clot_hpo.search.timing import metric_names
from clot_hpo.search.trial_runs import TrialRun, runs_in_use
from clot_hpo.search.worker_process import TrialLauncher
from clot_hpo.search.workers import FINISHED, WORKER_ATTR, ConsecutiveFailures, new_worker_id
from clot_hpo.tracking.background import BackgroundQueue
from clot_hpo.tracking.base import Tracker
from clot_hpo.tracking.checkpoints import CheckpointStore, NullCheckpointStore, checkpoint_store_for
from clot_hpo.tracking.spool import SpoolReader
from clot_hpo.util import FINISHED_TRIAL_STATES

log = logging.getLogger(__name__)

STUDIES_DIR = Path("mlruns") / "studies"
RUN_ID_WAIT_SECONDS = 10.0
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


class _Budget:
    """The study's budgets: trials, wall clock and epochs; global over workers and resumes."""

    def __init__(self, config: ExperimentConfig, started: float) -> None:
        self.n_trials = config.search.n_trials
        self.timeout = config.search.timeout
        self.max_total_epochs = config.search.max_total_epochs
        self.started = started

    def epochs_spent(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        # Each epoch once: not the epochs a resumed trial took over from its checkpoint.
        return epochs_spent(trials)

    def exhausted(self, trials: list[optuna.trial.FrozenTrial]) -> str | None:
        """Why no new trial may start, or None."""
        finished = sum(t.state in FINISHED for t in trials)
        if self.n_trials is not None and finished >= self.n_trials:
            return f"trial budget spent ({finished} of {self.n_trials} trials finished)"
        if self.timeout is not None and time.monotonic() - self.started >= self.timeout:
            return f"time budget spent ({self.timeout:g} s)"
        if self.max_total_epochs is not None:
            spent = self.epochs_spent(trials)
            if spent >= self.max_total_epochs:
                return f"epoch budget spent ({spent} of {self.max_total_epochs} epochs)"
        return None

    def taken_by_others(self, trials: list[optuna.trial.FrozenTrial]) -> bool:
        """Whether the trials still owed are all running in other workers right now."""
        if self.n_trials is None:
            return False
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        return waiting == 0 and finished + running >= self.n_trials

    def another_likely(self, trials: list[optuna.trial.FrozenTrial]) -> bool:
        """Whether a trial is likely to follow the one now running (worth starting its process).

        Only the trial budget can tell for sure; when the time or epoch budget ends the study
        instead, the process started ahead is discarded unused.
        """
        if self.n_trials is None:
            return True
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return finished + running < self.n_trials

    def epochs_left(self, trials: list[optuna.trial.FrozenTrial], per_trial: int) -> int:
        if self.max_total_epochs is None:
            return per_trial
        return max(1, min(per_trial, self.max_total_epochs - self.epochs_spent(trials)))


class StudyRunner:
    """Runs the trials of one study, each in its own child process."""

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        study: optuna.Study,
        tracker: Tracker,
        spaces: dict[str, str],
        manifest_path: Path,
        out_dir: Path,
        console: Console,
        data_digest: str = "",
        prestart: bool = True,
    ) -> None:
        self.config = config
        self.study = study
        self.tracker = tracker
        self.spaces = spaces
        self.manifest_path = manifest_path
        self.out_dir = out_dir
        self.console = console
        self.data_digest = data_digest
        # The next trial's process starts while the current one trains; discarded unused at the end.
        self.launcher = TrialLauncher(
            out_dir / "workers", prestart=prestart, env={PRELOAD_STORAGE_ENV: config.search.storage}
        )
        self._last_outcome_at: float | None = None
        self.objective: Objective = get_objective(config.search.objective)
        self.budget = _Budget(config, time.monotonic())
        self.worker_id = new_worker_id()
        self.failures = ConsecutiveFailures(self.worker_id, config.search.max_consecutive_failures)
        self.progress: StudyProgress | None = None
        # Tracking runs on one background thread, in order: each trial's uploads overlap the
        # next trial's training instead of delaying it.
        self.uploads = BackgroundQueue()
        self._uploading: set[int] = set()  # trial numbers whose runs this worker still closes
        # The study run's id, once the upload queue has opened it (run_search sets it): each
        # trial records it in Optuna, which `promote` checks runs against (search/ledger.py).
        self.parent_run: Future[Any] | None = None
        # Checkpoints go to the tracking server when other machines may retry the trial: a
        # database storage, not a SQLite file (docs/preemption.md).
        self.checkpoints: CheckpointStore = (
            checkpoint_store_for(tracker)
            if config.search.resume and not config.search.storage.startswith("sqlite")
            else NullCheckpointStore()
        )
        # SIGTERM: the running trial checkpoints and is queued again, then the worker exits 75.
        self.stop = GracefulStop()
        self.launcher.on_handed = self.stop.watch
        self.resumer = Resumer(
            config.search,
            checkpoints=self.checkpoints,
            trials_root=out_dir / "trials",
            console=console,
            rules=CheckpointRules(
                study=config.study_name,
                seed=config.seed,
                epochs=config.training.epochs,
                history_key=get_objective(config.search.objective).history_key,
            ),
        )
        self._noted: set[int] = set()  # trials whose run id this process recorded

    # ----- the loop ---------------------------------------------------------------------------
    def run(self) -> str:
        """Run trials until a budget is spent; return which one.

        Raises:
            Preempted: SIGTERM came (the trial it stopped is queued to resume).
        """
        self.stop.install()
        try:
            return self._run()
        finally:
            self.stop.uninstall()
            self.launcher.close()

    def _run(self) -> str:
        with StudyProgress(self.console, self.study, self.objective, self.budget.n_trials) as progress:
            self.progress = progress
            while True:
                trials = self._storage_call(self._trials_after_stale_check)
                # A worker killed mid-trial leaves its MLflow run RUNNING: close it as FAILED.
                self.uploads.submit(
                    "close the runs of dead workers' trials",
                    self.tracker.close_orphaned_trials,
                    keep=runs_in_use(trials, self._uploading),
                    reason="its worker stopped beating (killed?); Optuna marked the trial FAIL",
                )
                progress.update(trials)
                if self.stop.requested:
                    raise self._preempted()
                reason = self.budget.exhausted(trials)
                if reason:
                    return reason
                if self.budget.taken_by_others(trials):
                    # Stay until the other workers' last trials finish: if one dies, its
                    # heartbeat goes stale and this worker retries its parameters.
                    progress.note("waiting for trials running in other workers")
                    time.sleep(max(1.0, self.config.search.heartbeat_interval / 2))
                    continue
                self._storage_call(self._run_one_trial, rerun=False)
                if self.stop.requested:
                    raise self._preempted()
                self._storage_call(lambda: self.failures.update(self.study.get_trials(deepcopy=False)))

    def _preempted(self) -> Preempted:
        """Queue this worker's preempted trials to resume at once; the error that ends the worker."""
        trials = self._storage_call(lambda: self.study.get_trials(deepcopy=False))
        what = self._storage_call(lambda: self.resumer.requeue_preempted(trials, self.study, self.worker_id))
        return Preempted(f"preempted ({self.stop.requested}): {what}")

    def _run_one_trial(self) -> None:
        """Ask Optuna for one trial and run it (a failed trial is recorded, not raised)."""
        try:
            self.study.optimize(
                self._objective,
                n_trials=1,
                catch=(TrialFailed,),
                gc_after_trial=False,
                show_progress_bar=False,
            )
        except ValueError as exc:
            # Another worker saw no heartbeat (the database was away longer than grace_period),
            # failed the trial and queued its parameters again: this result is dropped, the
            # retry counts.
            if not failed_elsewhere(exc):
                raise
            self.console.print(
                "  [yellow]this trial was marked failed by another worker "
                "(no heartbeat while the database was away); its retry counts[/]"
            )

    def finish_uploads(self) -> None:
        """Wait for the queued tracking uploads (say so when there are any), then stop the queue."""
        if self.uploads.pending:
            self.console.print(f"  finishing the tracking uploads ({self.uploads.pending} queued)…")
        self.uploads.close()

    def _trials_after_stale_check(self) -> list[optuna.trial.FrozenTrial]:
        optuna.storages.fail_stale_trials(self.study)
        return self.study.get_trials(deepcopy=False)

    def _storage_call(self, func: Any, *, rerun: bool = True) -> Any:
        """``func()``, riding out a storage outage (:func:`.storage.call_retrying_storage`)."""
        return call_retrying_storage(func, console=self.console, rerun=rerun)

    # ----- one trial (runs in this process, trains in a child) ---------------------------------
    def _objective(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, self.worker_id)
        if self.data_digest:
            trial.set_user_attr(ATTR_DIGEST, self.data_digest)
        # One read of the study serves the surplus check, the retry lineage and the epoch budget.
        trials = self.study.get_trials(deepcopy=False)
        frozen = trials[trial.number]  # a study's trials are listed by number
        if self._is_surplus(frozen, trials):
            trial.set_user_attr("surplus", True)
            raise TrialFailed("not run: the trial budget was taken by other workers meanwhile")
        number = trial.number
        point = self.resumer.point(trial, frozen, trials)
        # A fresh folder per trial and attempt: one left by an older study of the same name
        # (fresh stores number trials from 0 again) is never replayed into this trial's run.
        spool = SpoolReader.fresh(self._trial_dir(number)) if self.tracker.enabled else None
        checkpoint = self._trial_dir(number) / CHECKPOINT_FILE
        tags = self._run_tags(frozen)
        if point is not None:
            tags[TAG_RESUMED_FROM] = str(point.epoch)
        tracked = TrialRun(
            self.uploads,
            self.tracker,
            number,
            tags=tags,
            spool=spool,
            in_use=self._uploading,
            checkpoints=self.checkpoints,
            checkpoint_file=checkpoint,
            on_model=lambda model_id: self._record_model_id(number, model_id),
        )
        task = self._task(trial, trials, spool)
        self.resumer.prepare(
            task, frozen, point, epochs_left=self.budget.epochs_left(trials, trial_epochs(self.config))
        )
        assert self.progress is not None
        self.progress.start_trial(number)
        # This process's own time between two trials: telling Optuna, reading the study, asking.
        handoff = time.time() - self._last_outcome_at if self._last_outcome_at is not None else None
        start_next = self.budget.another_likely(trials)

        def on_line(line: str) -> None:  # the child spools before it prints: forward while it trains
            self.console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)
            self._note_run_id(trial, tracked.run)
            tracked.forward()

        def launch(task: TrialTask) -> tuple[TrialOutcome, Callable[[], None] | None]:
            return self.launcher.run(task, self._trial_dir(number), on_line=on_line, start_next=start_next)

        rest: Callable[[], None] | None = None  # the trial process's work after its outcome
        try:
            outcome, rest = run_with_oom_retry(
                launch, task, study=self.study, trial=trial, console=self.console, spool=spool
            )
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted by the user")
            tracked.finish("FAIL", "interrupted by the user", {"interrupted": True}, rest)
            raise
        self._last_outcome_at = time.time()
        # The phases' timings go to the run as metrics time_<phase>_s.
        timings = metric_names(self._record(trial, outcome, handoff))
        self._note_run_id(trial, tracked.run, wait=True)
        if outcome.state in FINISHED_TRIAL_STATES:  # nothing left to resume
            self.resumer.finished(number, point)
        return self._conclude(trial, outcome, tracked, timings, rest)

    def _conclude(
        self,
        trial: optuna.Trial,
        outcome: TrialOutcome,
        tracked: TrialRun,
        timings: dict[str, float],
        rest: Callable[[], None] | None,
    ) -> float:
        """Close the trial's run with its outcome; return the value, or raise how Optuna is told.

        Raises:
            optuna.TrialPruned: the trial was pruned.
            TrialFailed: it failed, or was preempted (then it is marked to resume elsewhere).
        """
        if outcome.state == "COMPLETE" and outcome.value is not None:
            tracked.finish("COMPLETE", None, {"value": outcome.value, **timings}, rest)
            return float(outcome.value)
        reason = outcome.reason or "unknown"
        if outcome.state == "PRUNED":
            trial.set_user_attr("prune_reason", reason)
            tracked.finish("PRUNED", reason, timings, rest)
            raise optuna.TrialPruned(reason)
        trial.set_user_attr("fail_reason", reason)
        tracked.offer_last_checkpoint()  # a retry on another machine starts from it
        if outcome.preempted or self.stop.requested:
            trial.set_user_attr(PREEMPTED_ATTR, True)
            tracked.finish("FAIL", reason, {**timings, PREEMPTED_ATTR: "true"}, rest)
            self.console.print(
                f"  [yellow]trial {trial.number} preempted:[/] {reason}; it resumes in the next worker"
            )
            raise TrialFailed(reason)
        tracked.finish("FAIL", reason, timings, rest)
        self.console.print(f"  [red]trial {trial.number} failed:[/] {reason}")
        raise TrialFailed(reason)

    def _run_tags(self, frozen: optuna.trial.FrozenTrial) -> dict[str, str]:
        """The tags of a trial's run: its study, its number and the trial it retries."""
        tags = {"optuna.study": self.study.study_name, "optuna.trial_number": str(frozen.number)}
        source = retried_from(frozen)
        if source is not None:
            tags["optuna.retried_from"] = str(source)
        return tags

    def _task(
        self, trial: optuna.Trial, trials: list[optuna.trial.FrozenTrial], spool: SpoolReader | None
    ) -> TrialTask:
        """What the trial's process is to do."""
        return TrialTask(
            config=self.config.model_dump(mode="json"),
            study_name=self.study.study_name,
            storage=self.config.search.storage,
            trial_id=trial_id(trial),
            trial_number=trial.number,
            spool_dir=str(spool.folder) if spool else "",
            manifest_path=str(self.manifest_path),
            spaces=self.spaces,
            max_epochs=self.budget.epochs_left(trials, trial_epochs(self.config)),
            result_path=str(self._trial_dir(trial.number) / "outcome.json"),
            cache_dir=str(self.out_dir / "cache"),
            data_digest=self.data_digest,
        )

    @staticmethod
    def _record(trial: optuna.Trial, outcome: TrialOutcome, handoff: float | None) -> dict[str, float]:
        """Record the outcome's timings, epochs, batch and metrics on the trial; return the timings."""
        timings = dict(outcome.timings)
        if handoff is not None:
            timings["time_handoff"] = round(handoff, 3)
        for key, value in timings.items():
            trial.set_user_attr(key, value)
        if outcome.epochs_run:  # a process that died reported none: keep what it recorded
            trial.set_user_attr("epochs_run", outcome.epochs_run)
        if outcome.batch_size is not None:
            trial.set_user_attr("batch_size_run", outcome.batch_size)
            trial.set_user_attr("accumulation_steps_run", outcome.accumulation_steps)
        for key, value in outcome.metrics.items():
            trial.set_user_attr(key, value)
        return timings

    # ----- tracking, on the upload thread -------------------------------------------------------
    def _note_run_id(self, trial: optuna.Trial, run: Future[Any], *, wait: bool = False) -> None:
        """Record the trial's MLflow run id (and its study run's) as user attributes once the run exists.

        ``wait`` waits a little (the run is normally long open by then), never through a
        tracking outage: the run id is also on the run's own tags.
        """
        # Noted by this process only: a retry inherits its original's user attributes, run id too.
        if trial.number in self._noted or not (wait or run.done()):
            return
        try:
            run_id = run.result(timeout=RUN_ID_WAIT_SECONDS)
        except FutureTimeout:
            return
        if run_id:
            self._noted.add(trial.number)
            trial.set_user_attr(ATTR_RUN_ID, run_id)
            # The queue runs in order: the study run was opened before this trial's run.
            parent = self.parent_run
            if parent is not None and parent.done() and parent.result():
                trial.set_user_attr(ATTR_PARENT_RUN_ID, str(parent.result()))

    def _record_model_id(self, number: int, model_id: str) -> None:
        """The ledger's model id of trial ``number`` (on the upload thread, once the model is stored)."""
        try:
            self._storage_call(lambda: record_model_id(self.study, number, model_id))
        except Exception as exc:  # noqa: BLE001 - the upload thread must go on; promote will refuse
            log.warning("trial %d: its model id %s is not in the Optuna storage: %s", number, model_id, exc)

    def _is_surplus(self, trial: optuna.trial.FrozenTrial, trials: list[optuna.trial.FrozenTrial]) -> bool:
        """Whether earlier-numbered trials already cover the budget (two workers asked at once)."""
        if self.budget.n_trials is None or trial.system_attrs.get("failed_trial") is not None:
            return False
        earlier = trials[: trial.number]
        live = sum(t.state in FINISHED or t.state == TrialState.RUNNING for t in earlier)
        return live >= self.budget.n_trials

    def _trial_dir(self, number: int) -> Path:
        path = self.out_dir / "trials" / f"{number:04d}"
        path.mkdir(parents=True, exist_ok=True)
        return path


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
        tracker.start_study,
        study_name,
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
