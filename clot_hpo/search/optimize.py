"""The trial loop: one trial at a time, each in a fresh child process, until a budget is spent.

:class:`StudyRunner` asks Optuna for a trial, hands it to a trial process
(:mod:`clot_hpo.search.trial.launcher`, started while the previous trial trains), records its
outcome on the Optuna trial and hands the trial's run to the tracker's forwarder
(:class:`~clot_hpo.tracking.trial_run.TrialRun`). Setting a study up (config, search spaces,
data, storage, the tracker) is :mod:`clot_hpo.search.study`'s; Optuna keeps the same split
(``optuna/study/_optimize.py`` beside ``Study``). The budget counts COMPLETE and PRUNED trials
over the whole study, so rerunning the same command resumes it and several workers on one
storage share it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from clot_hpo.checkpoint_file import CHECKPOINT_FILE
from clot_hpo.config import ExperimentConfig
from clot_hpo.errors import Preempted, TrialFailed
from clot_hpo.search.folds import trial_epochs
from clot_hpo.search.ledger import ATTR_DIGEST, ATTR_PARENT_RUN_ID, ATTR_RUN_ID, record_model_id
from clot_hpo.search.objectives import Objective, get_objective
from clot_hpo.search.optuna_compat import failed_elsewhere, trial_id
from clot_hpo.search.progress import StudyProgress
from clot_hpo.search.storage import (
    call_retrying_storage,
    retried_from,
)
from clot_hpo.search.trial.launcher import TrialLauncher
from clot_hpo.search.trial.oom_retry import run_with_oom_retry
from clot_hpo.search.trial.resume import (
    PREEMPTED_ATTR,
    TAG_RESUMED_FROM,
    CheckpointRules,
    GracefulStop,
    Resumer,
    epochs_spent,
)
from clot_hpo.search.trial.task import PRELOAD_STORAGE_ENV, TrialOutcome, TrialTask
from clot_hpo.search.trial.timing import metric_names
from clot_hpo.search.workers import FINISHED, WORKER_ATTR, ConsecutiveFailures, new_worker_id
from clot_hpo.tracking.background import BackgroundQueue
from clot_hpo.tracking.base import Tracker
from clot_hpo.tracking.checkpoint_upload import CheckpointStore, NullCheckpointStore, checkpoint_store_for
from clot_hpo.tracking.spool import SpoolReader
from clot_hpo.tracking.trial_run import TrialRun
from clot_hpo.util import FINISHED_TRIAL_STATES

log = logging.getLogger(__name__)

RUN_ID_WAIT_SECONDS = 10.0


# A finished trial's run stays open while its worker uploads the trial's model; another
# worker closes it as orphaned only after this long (its worker must have died meanwhile).
UPLOAD_GRACE_SECONDS = 600.0


def orphaned_runs(trials: Iterable[optuna.trial.FrozenTrial], uploading: set[int]) -> set[int]:
    """Trials whose runs should be closed if still open: over, and no longer uploading.

    Only trials this snapshot says are over: one that another worker starts after it (a new
    one, or a WAITING one it claims) is not among them, even when the snapshot is acted on
    later, on the upload thread (that trial's run is then open, and must stay so).

    Args:
        trials: the study's trials.
        uploading: trial numbers whose runs this worker still closes (:class:`TrialRun`).
    """
    now = time.time()

    def uploaded(t: optuna.trial.FrozenTrial) -> bool:
        # A worker uploads a finished trial's model before closing its run: give it time.
        ended = t.datetime_complete
        return t.state not in FINISHED or ended is None or now - ended.timestamp() >= UPLOAD_GRACE_SECONDS

    return {t.number for t in trials if t.state.is_finished() and t.number not in uploading and uploaded(t)}


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
                    only=orphaned_runs(trials, self._uploading),
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


__all__ = ["StudyRunner", "orphaned_runs"]
