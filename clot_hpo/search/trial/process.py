"""One trial, in its own process: ``python -m clot_hpo.search.trial.process TASK.json``.

The study process starts it as ``... --wait`` while the previous trial trains
(:mod:`clot_hpo.search.trial.launcher`): it imports everything (:func:`preload`), then reads
its task file's path from stdin, runs that one trial and exits.

A fresh process per trial keeps the study process's memory flat (measured: about 380 MB
leaked per EfficientNetB1 trial in-process, even with ``keras.backend.clear_session()``;
see https://github.com/keras-team/keras-tuner/issues/873) and turns a segfault or an
out-of-memory kill into one failed trial instead of a lost study.

The child reads the trial's hyperparameters through the shared Optuna storage, reports
each epoch to it (so pruning works across processes), records what the tracker should log
in a spool folder (:mod:`clot_hpo.tracking.spool`; the study process forwards it, so the
child never imports MLflow), and writes a :class:`TrialOutcome` JSON. It exits 0 whenever
it could write an outcome.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from clot_hpo.search.trial.task import OUTCOME_WRITTEN, PRELOAD_STORAGE_ENV, TrialOutcome, TrialTask
from clot_hpo.search.trial.timing import PhaseTimer, process_started_at
from clot_hpo.util import first_line, redact_logging

log = logging.getLogger("clot_hpo.trial")

# Storages opened by preload(), by URL; a trial takes its own out (a process runs one trial).
_OPENED_STORAGES: dict[str, Any] = {}


def preload() -> None:
    """Import what every trial needs: most of a trial process's start, done before its task.

    A pre-started process (:mod:`clot_hpo.search.trial.launcher`) runs this while the previous
    trial trains: imports, a warm-up on a throwaway model, and opening the study's storage
    when the study process named it (``CLOT_HPO_PRELOAD_STORAGE``). Devices, seeds and the
    dtype policy are set per trial, once the task says how.
    """
    import keras  # noqa: F401 - imports TensorFlow
    import matplotlib.pyplot  # noqa: F401 - the evaluation's figures
    import optuna  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import clot_hpo.budget  # noqa: F401
    import clot_hpo.config  # noqa: F401
    import clot_hpo.data.cache  # noqa: F401
    import clot_hpo.data.pipeline  # noqa: F401
    import clot_hpo.evaluate  # noqa: F401
    import clot_hpo.models.hypermodel  # noqa: F401
    import clot_hpo.search.hp  # noqa: F401
    import clot_hpo.search.samplers  # noqa: F401
    import clot_hpo.search.storage  # noqa: F401
    import clot_hpo.search.trial.epochs  # noqa: F401
    import clot_hpo.search.trial.evaluation  # noqa: F401
    import clot_hpo.search.trial.phases  # noqa: F401
    import clot_hpo.search_space  # noqa: F401
    import clot_hpo.tracking.spool  # noqa: F401
    import clot_hpo.train  # noqa: F401

    _warm_up_keras()
    url = os.environ.get(PRELOAD_STORAGE_ENV)
    if url:
        from clot_hpo.errors import ConfigError
        from clot_hpo.search.storage import open_storage

        try:
            _OPENED_STORAGES[url] = open_storage(url, pooled=False)
        except ConfigError as exc:  # the trial opens it again and reports what is wrong
            log.debug("could not open the storage ahead of the task: %s", exc)


def _warm_up_keras() -> None:
    """Pay Keras' and TensorFlow's first-use costs on a throwaway model, without a GPU only.

    A process's first ``fit`` costs about a second more than its second one (TensorFlow's
    function and autograph machinery, Keras' data adapters and metrics, oneDNN's start).
    ``keras.backend.clear_session()`` then drops Keras' global state, its global seed
    generator among it, so a trial seeded afterwards trains exactly as in a process that
    never warmed up. With a GPU it is skipped: TensorFlow's device settings
    (``budget.configure_gpu``) must come before its runtime starts.
    """
    import keras
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.RandomFlip(),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc")])
    images = np.zeros((4, 8, 8, 3), dtype=np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, np.zeros(4, dtype=np.float32))).batch(2)
    model.fit(data, validation_data=data, epochs=1, verbose=0)
    model(images, training=False)
    keras.backend.clear_session()


@dataclass
class TrialResult:
    """How a trial ended, and the work left once the study process knows it."""

    outcome: TrialOutcome
    # Run after the outcome is written (the evaluation's intervals and figures); None: nothing.
    after: Callable[[], None] | None = None


def run_trial(task: TrialTask, timer: PhaseTimer | None = None) -> TrialResult:
    """Run one trial end to end; each phase is its package's.

    The search's own phases: :mod:`~clot_hpo.search.trial.phases` (before training),
    :mod:`~clot_hpo.search.trial.epochs` (during), :mod:`~clot_hpo.search.trial.evaluation` (after).

    ``timer`` receives each phase's wall time (:mod:`clot_hpo.search.trial.timing`).
    """
    import optuna

    from clot_hpo.checkpoint_file import epoch_checkpoint
    from clot_hpo.evaluate import point_metrics
    from clot_hpo.search.trial import epochs as epoch_phase
    from clot_hpo.search.trial import evaluation
    from clot_hpo.search.trial import phases as phase
    from clot_hpo.search.trial.resume import PreemptedStop
    from clot_hpo.train import predict_probabilities, train

    timer = timer or PhaseTimer()
    setup = phase.set_up_trial(task, storage=_OPENED_STORAGES.pop(task.storage, None))
    timer.lap("setup")
    model = phase.build_model(setup)
    timer.lap("build")
    plan = phase.plan_vram(setup, model)  # read from the built model, recorded on the trial
    timer.lap("vram_estimate")
    phase.prune_if_over_budget(plan)
    if phase.apply_plan(setup, model, plan):
        timer.lap("build")
    # After the plan: a trial the budget prunes never decodes its images (80 at 1536 px are
    # 2.2 GB of float32 and seconds of resizing, for nothing).
    data = phase.open_splits(setup)  # decoded once per image size for the whole study
    timer.lap("data")
    tracker = phase.trial_tracker(task)
    tracker.log_params("", phase.trial_params(setup, plan))
    phase.inject_fault(task)
    if setup.config.search.cv_folds:  # k folds, then the refit that is kept (docs/data.md)
        from clot_hpo.search.trial.cv import run_folds

        return run_folds(setup, data, model, plan, tracker, timer)
    train_ds, order = phase.training_data(setup, data, plan)  # each epoch's order and side: (seed, epoch)
    val_ds = phase.validation_data(setup, data, plan, order)
    phase.announce(setup, plan)
    timer.lap("data")

    epochs = epoch_phase.EpochReports(setup, tracker, timer)  # reports to Optuna, which may prune
    # A retry: its original's last checkpoint (docs/preemption.md).
    resume = epoch_phase.load_resume(setup, model)
    if resume is not None:
        epoch_phase.replay_checkpoint(setup, tracker, resume)
        epochs.resumed_from = resume.epoch
    # Saves each epoch before it is reported: an epoch Optuna knows is an epoch on disk.
    checkpoints = epoch_checkpoint(
        task.checkpoint_path or None,
        resume=resume,
        order=order,
        meta=epoch_phase.checkpoint_meta(setup),
        on_written=epoch_phase.checkpoint_recorder(setup),  # each file's sha256 to the ledger
    )
    if task.checkpoint_path and _preemption is not None:
        epochs.after_epoch = _preemption.check  # SIGTERM stops the trial after the epoch's checkpoint
        _preemption.arm()
    try:
        train(
            setup.hypermodel,
            setup.hp,
            model,
            train_ds,
            val_ds,
            epochs=setup.epochs,
            steps_per_epoch=setup.config.training.steps_per_epoch,
            on_epoch_end=epochs,
            initial_epoch=epochs.resumed_from,
            callbacks=[checkpoints],
            class_weight=phase.training_class_weight(setup, data),
        )
    except optuna.TrialPruned as exc:
        return TrialResult(epochs.outcome("PRUNED", plan, reason=str(exc)))
    except PreemptedStop as exc:
        return TrialResult(epochs.outcome("FAIL", plan, reason=str(exc), preempted=True))
    history = checkpoints.history  # every epoch, the resumed ones first

    timer.restart()
    test_ds = phase.dataset(setup, data, plan, "test")
    if setup.sides is not None:  # the final value is always a full-size one
        val_ds = phase.dataset(setup, data, plan, "val")
    predictions = (*predict_probabilities(model, val_ds), *predict_probabilities(model, test_ds))
    points = point_metrics(*predictions, setup.config.evaluation)  # cheap: no intervals
    threshold = float(points["threshold"])
    evidence = evaluation.record_predictions(setup, data, predictions)  # their sha256 to the ledger
    after = partial(
        evaluation.evaluate_and_log, setup, tracker, model, data, predictions, history, threshold, evidence
    )
    # Without a GPU, intervals and figures come after the outcome, while the next trial starts
    # (the study process waits for them before it closes this trial's run). With one, this
    # process would hold its GPU memory into the next trial's: they come first.
    deferred = tracker.enabled and not setup.gpu.gpus
    if tracker.enabled and not deferred:
        after()
    timer.lap("evaluate")
    if setup.config.tracking.log_model:
        evaluation.log_model(setup, tracker, model, threshold)
        timer.lap("save_model")
    return TrialResult(epochs.completed(plan, history, points), after=after if deferred else None)


_interrupted_by: str | None = None
# SIGTERM's handler (clot_hpo.search.trial.resume.TrialPreemption), set by main(): armed while
# the trial trains with checkpoints, it lets the epoch finish its checkpoint first.
_preemption: Any = None


def _interrupt(signum: int, frame: object) -> None:
    """Raise KeyboardInterrupt, remembering the signal's name for the trial's reason."""
    global _interrupted_by
    _interrupted_by = signal.Signals(signum).name
    raise KeyboardInterrupt


def _read_task(argv: list[str], started: float | None, timer: PhaseTimer) -> TrialTask | None:
    """The task: named in ``argv``, or (``--wait``) read from stdin once preloading is done.

    Returns None when a waiting process's stdin ends without a task (the study process
    ended, or discarded this process).
    """
    if argv and argv[0] == "--wait":
        preload()
        ready = time.time()
        line = sys.stdin.readline().strip()
        if not line:
            return None
        task = TrialTask.load(line)
        timer.restart(task.handed_at or ready)
        timer.add("startup", ready - started if started else 0.0)
        timer.lap("startup_waited")
        return task
    if len(argv) != 1:
        raise SystemExit(
            f"usage: python -m {__spec__.name if __spec__ else 'clot_hpo.search.trial.process'} "
            f"TASK.json | --wait (task path on stdin), but got {argv}"
        )
    preload()
    task = TrialTask.load(argv[0])
    timer.lap("startup")
    timer.add("startup_waited", timer.seconds["startup"])  # nothing overlapped it
    return task


def main(argv: list[str] | None = None) -> int:
    """Run one trial (``TASK.json``, or ``--wait`` for its path on stdin); return the exit code.

    The outcome, with the phases' timings, is written to the task's ``result_path``.
    """
    argv = sys.argv[1:] if argv is None else argv
    started = process_started_at()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    redact_logging()  # its log is a file in the study's folder: no URL's password in it
    # SIGTERM: a waiting process the study process no longer needs, or a preempted worker
    # passing its signal on. Before training it ends like a KeyboardInterrupt, saying which
    # signal it was in the reason; while training with checkpoints it first finishes the
    # epoch's checkpoint, within the task's grace time (docs/preemption.md).
    global _preemption
    from clot_hpo.search.trial.resume import TrialPreemption

    _preemption = TrialPreemption(25.0, _interrupt)
    signal.signal(signal.SIGTERM, _preemption.handle)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored
        signal.signal(signal.SIGINT, _interrupt)
    timer = PhaseTimer(origin=started)
    try:
        task = _read_task(argv, started, timer)
    except KeyboardInterrupt:
        return 130  # stopped before it had a task: there is no trial to record
    if task is None:
        return 0
    _preemption.grace_s = task.preemption_grace_s
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    after = None
    try:
        result = run_trial(task, timer)
        outcome, after = result.outcome, result.after
    except KeyboardInterrupt:
        preempted = _preemption.requested is not None
        how = "preempted, past the grace time" if preempted else "interrupted"
        outcome = TrialOutcome(
            state="FAIL", reason=f"{how} ({_interrupted_by or 'KeyboardInterrupt'})", preempted=preempted
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes the trial's recorded reason
        if isinstance(exc, optuna.TrialPruned):
            outcome = TrialOutcome(state="PRUNED", reason=str(exc))
        else:
            from clot_hpo.budget import is_oom_error

            detail = traceback.format_exc(limit=-3)
            log.debug(detail)
            message = first_line(exc, default="")
            outcome = TrialOutcome(
                state="FAIL",
                reason=f"{type(exc).__name__}: {message}"[:500],
                oom=is_oom_error(exc),
            )
            if os.environ.get("CLOT_HPO_DEBUG"):
                print(detail, file=sys.stderr)
    timer.add("total", time.time() - (task.handed_at or timer.origin))
    outcome.timings = timer.attrs()
    outcome.save(task.result_path)
    if after is not None:
        # The study process goes on with the next trial at this line and waits for this
        # process's exit only before it closes this trial's run.
        print(OUTCOME_WRITTEN, flush=True)
        try:
            after()
        except KeyboardInterrupt:
            return 130
        except Exception:  # noqa: BLE001 - the trial is told already; its run lacks what failed
            traceback.print_exc(file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    code = main()
    # Skip the interpreter's teardown: with TensorFlow loaded it takes 2-9 s here, and the
    # study process waits for this process's exit. Everything is written by now (the outcome
    # atomically, the spool line by line, Optuna's storage committed); only stdio may buffer.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
