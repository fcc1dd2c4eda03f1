"""The search's share of a trial while it trains: each epoch reported (and pruned), checkpoints.

Also a retried trial's start: the checkpoint it resumes from, checked against the trial, and
the epochs that checkpoint holds replayed to Optuna and the trial's run, so that both see one
unbroken learning curve. The outcome the trial hands back is built here too
(:meth:`EpochReports.outcome`). Imported by the trial process only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import optuna

from clot_hpo.budget import TrialBudget
from clot_hpo.checkpoint_file import TrainingCheckpoint, load_checkpoint
from clot_hpo.search.ledger import HEADLINE_METRICS, record_checkpoint
from clot_hpo.search.objectives import get_objective
from clot_hpo.search.trial.phases import TrialSetup, injected_fault
from clot_hpo.search.trial.task import TrialOutcome
from clot_hpo.search.trial.timing import PhaseTimer
from clot_hpo.tracking import TrialTracker
from clot_hpo.tracking.base import to_plain
from clot_hpo.train import format_epoch, monitored_value
from clot_hpo.util import file_sha256


def load_resume(setup: TrialSetup, model: keras.Model) -> TrainingCheckpoint | None:
    """The checkpoint the task resumes from, if it is readable and this trial's; else None.

    The study process checked it against the ledger (:func:`~clot_hpo.search.trial.resume.
    checkpoint_refusal`); here its arrays are capped at what ``model``'s state can take
    before anything is decompressed, and its parameters must be the trial's. A checkpoint
    refused is said in one line: the trial then starts from scratch.
    """
    task = setup.task
    if not task.resume_from:
        return None
    checkpoint = load_checkpoint(task.resume_from, max_bytes=state_bytes(model))
    if checkpoint is None:
        print(
            f"  trial {task.trial_number} · the checkpoint {task.resume_from} cannot be read; "
            "starting from scratch",
            flush=True,
        )
        return None
    if checkpoint.meta.get("params") != to_plain(setup.hp.values):
        print(
            f"  trial {task.trial_number} · the checkpoint {task.resume_from} holds other parameters "
            "than the trial's; starting from scratch",
            flush=True,
        )
        return None
    recorded_sides = checkpoint.meta.get("sides")
    if recorded_sides != setup.sides:
        print(
            f"  trial {task.trial_number} · the checkpoint {task.resume_from} follows another size "
            f"schedule ({recorded_sides}, now {setup.sides}); starting from scratch",
            flush=True,
        )
        return None
    return checkpoint


def state_bytes(model: keras.Model) -> int:
    """The most a checkpoint of ``model`` can hold: its variables, and an optimizer's slots.

    Adam keeps two slots per trainable variable, gradient accumulation one more; with
    iterations and a schedule's state that stays under four times the variables, plus 1 MiB.
    """
    size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.variables)
    return int(4 * size + (1 << 20))


def checkpoint_meta(setup: TrialSetup) -> dict[str, Any]:
    """What each checkpoint records about its trial (checked when a retry loads it)."""
    return {
        "study": setup.task.study_name,
        "trial": setup.task.trial_number,
        "seed": setup.seed,
        "params": to_plain(setup.hp.values),
        "sides": setup.sides,  # each epoch's image side (None: all at image_size)
    }


def replay_checkpoint(setup: TrialSetup, tracker: TrialTracker, checkpoint: TrainingCheckpoint) -> None:
    """Give the retry the epochs its checkpoint holds: Optuna reports, the run's metrics, a line.

    The retry's intermediate values and its run's metric history then cover every epoch once,
    on the epoch's own step, as one unbroken learning curve. What goes to Optuna is what the
    checkpoint's trial reported to it (the ledger): the study process refused a checkpoint
    whose history differs from those. Only epochs the trial checkpointed but was killed
    before reporting come from the file, whose sha256 the trial recorded.
    """
    task, trial = setup.task, setup.trial
    epochs = checkpoint.epoch
    if task.resume_trial == task.trial_number:  # its own (the OOM retry): all recorded already
        print(f"  trial {task.trial_number} · resumed its own checkpoint at epoch {epochs}", flush=True)
        return
    key = get_objective(setup.config.search.objective).history_key
    reported = _reported_values(setup, task.resume_trial)
    history = checkpoint.history
    for epoch in range(min(epochs, max((len(v) for v in history.values()), default=0))):
        logs = {k: v[epoch] for k, v in history.items() if epoch < len(v)}
        if setup.sides is not None:  # the same schedule (load_resume checked it)
            logs["image_size"] = float(setup.sides[min(epoch, len(setup.sides) - 1)])
        tracker.log_epoch("", epoch, logs)
        value = reported.get(epoch, logs.get(key))
        if value is not None and value == value:
            with warnings.catch_warnings():
                # A heartbeat retry may already hold its original's reports.
                warnings.filterwarnings("ignore", message=".*already reported.*")
                trial.report(float(value), epoch)
    trial.set_user_attr("resumed_from_epoch", epochs)
    trial.set_user_attr("resumed_from_trial", task.resume_trial)
    trial.set_user_attr("epochs_run", epochs)
    print(
        f"  trial {task.trial_number} · resumed from trial {task.resume_trial}'s checkpoint "
        f"at epoch {epochs}",
        flush=True,
    )


def _reported_values(setup: TrialSetup, number: int | None) -> dict[int, float]:
    """The intermediate values trial ``number`` of the study reported to Optuna."""
    if number is None:
        return {}
    trials = setup.trial.study.get_trials(deepcopy=False)
    if number >= len(trials):
        return {}
    return {int(k): float(v) for k, v in trials[number].intermediate_values.items()}


class EpochReports:
    """The trial's ``on_epoch_end``: time the epoch, record and print it, report it, maybe prune.

    Args:
        setup: the trial.
        tracker: where the epoch's metrics go.
        timer: charges epoch 1 to ``first_epoch`` and the others to ``later_epochs``.
    """

    def __init__(self, setup: TrialSetup, tracker: TrialTracker, timer: PhaseTimer) -> None:
        self.setup = setup
        self.tracker = tracker
        self.timer = timer
        self.objective = get_objective(setup.config.search.objective)
        self.epochs_run = 0
        # Epochs taken over from a checkpoint; `after_epoch(epochs_done)` runs last each epoch
        # (the preemption check: the epoch is checkpointed and reported by then).
        self.resumed_from = 0
        self.after_epoch: Callable[[int], None] | None = None

    def __call__(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        """Handle epoch ``epoch`` (0-based).

        Raises:
            TrialFailed: the objective's metric is NaN (the run diverged).
            optuna.TrialPruned: the pruner stops the trial.
        """
        setup, key = self.setup, self.objective.history_key
        self.epochs_run = epoch + 1
        self.timer.lap("first_epoch" if epoch == 0 else "later_epochs")
        side = setup.sides[min(epoch, len(setup.sides) - 1)] if setup.sides is not None else None
        # Each epoch's metrics say the side they were measured at when it changes.
        recorded = logs if side is None else {**logs, "image_size": float(side)}
        # Spooled before the line is printed: the study process forwards the spool on each line.
        self.tracker.log_epoch("", epoch, recorded)
        print(format_epoch(setup.task.trial_number, epoch, setup.epochs, logs, seconds, side), flush=True)
        setup.trial.set_user_attr("epochs_run", self.epochs_run)
        value = monitored_value(logs, key, epoch)
        with warnings.catch_warnings():
            # On the OOM retry, epochs reported by the first attempt are kept, not overwritten.
            warnings.filterwarnings("ignore", message=".*already reported.*")
            setup.trial.report(value, epoch)
        if setup.trial.should_prune():
            at = f" at {side}px" if side is not None and side != setup.settings.image_size else ""
            raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} with {key}={value:.4f}{at}")
        self.timer.restart()  # reporting and the pruning check belong to no epoch
        if self.after_epoch is not None:
            self.after_epoch(self.epochs_run)
        if self.epochs_run == 2 and setup.task.attempt == 0 and injected_fault(setup.task) == "oom2":
            import tensorflow as tf

            raise tf.errors.ResourceExhaustedError(None, None, "injected OOM when allocating tensor")

    def outcome(self, state: str, plan: TrialBudget, **fields: Any) -> TrialOutcome:
        """The trial's outcome after the epochs run so far, with the batch it ran."""
        return TrialOutcome(
            state=state,
            epochs_run=max(self.epochs_run, self.resumed_from),
            batch_size=plan.batch_size,
            accumulation_steps=plan.accumulation_steps,
            resumed_from_epoch=self.resumed_from,
            **fields,
        )

    def completed(
        self, plan: TrialBudget, history: dict[str, list[float]], points: dict[str, float]
    ) -> TrialOutcome:
        """The outcome of a trial that trained to the end, valued by its objective.

        The exact (scikit-learn) AUC where there is one, so Optuna's best is what ``promote``
        picks; Keras' binned AUC served for the per-epoch pruning reports.
        """
        name, key = self.objective.name, self.objective.history_key
        value = float(points[name] if name == "val_auc" else history[key][-1])
        metrics = {k: float(points[k]) for k in HEADLINE_METRICS if k in points}
        return self.outcome("COMPLETE", plan, value=value, metrics=metrics)


def checkpoint_recorder(setup: TrialSetup) -> Callable[[int, Any], None]:
    """``on_written`` of the epoch checkpoint: its sha256 goes to the ledger before the file is in place."""

    def record(epochs_done: int, path: Any) -> None:
        record_checkpoint(setup.trial, epochs_done, file_sha256(path))

    return record
