"""One trial, in its own process: ``python -m clot_hpo.search.trial_process TASK.json``.

The study process starts it as ``... --wait`` while the previous trial trains
(:mod:`clot_hpo.search.worker_process`): it imports everything (:func:`preload`), then reads
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
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clot_hpo.search.task import OUTCOME_WRITTEN, PRELOAD_STORAGE_ENV, TrialOutcome, TrialTask
from clot_hpo.search.timing import PhaseTimer, process_started_at
from clot_hpo.util import first_line

log = logging.getLogger("clot_hpo.trial")

# Test hook: "oom:N" raises ResourceExhaustedError in trial N's first attempt; "crash:N" kills
# trial N's process with SIGKILL; "segv:N" with SIGSEGV. Never set by users.
FAULT_ENV = "CLOT_HPO_FAULT_INJECT"


def _injected_fault(task: TrialTask) -> str | None:
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, spec.split(",")):
        kind, _, number = item.partition(":")
        if number.isdigit() and int(number) == task.trial_number:
            return kind
    return None


def _format_epoch(number: int, epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> str:
    keys = ("loss", "auc", "val_loss", "val_auc", "val_accuracy")
    parts = [f"{k} {logs[k]:.4f}" for k in keys if k in logs]
    return f"  trial {number} · epoch {epoch + 1}/{epochs} · " + " · ".join(parts) + f" · {seconds:.1f}s"


# Storages opened by preload(), by URL; a trial takes its own out (a process runs one trial).
_OPENED_STORAGES: dict[str, Any] = {}


def preload() -> None:
    """Import what every trial needs: most of a trial process's start, done before its task.

    A pre-started process (:mod:`clot_hpo.search.worker_process`) runs this while the previous
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
    import clot_hpo.search_space  # noqa: F401
    import clot_hpo.tracking.spool  # noqa: F401
    import clot_hpo.train  # noqa: F401

    _warm_up_keras()
    url = os.environ.get(PRELOAD_STORAGE_ENV)
    if url:
        from clot_hpo.errors import ConfigError
        from clot_hpo.search.storage import open_storage

        try:
            _OPENED_STORAGES[url] = open_storage(url)
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


def planned_trainable(*, pretrained: bool, unfreeze_fraction: float, freeze_epochs: int, epochs: int) -> str:
    """What the VRAM plan trains: ``"head"`` only when a pretrained base stays frozen all trial.

    ``pretrained`` is whether the built backbone got pretrained weights
    (``ClotHyperModel.pretrained``), not whether they were asked for: offline, ImageNet weights
    fall back to random initialization, and a random base is trained whole.
    """
    frozen_all_along = unfreeze_fraction <= 0 or freeze_epochs >= epochs
    return "head" if pretrained and frozen_all_along else "all"


def plan_budget(
    config: Any,
    hypermodel: Any,
    settings: Any,
    model: Any,
    *,
    budget: Any,
    epochs: int,
    mixed_precision: bool,
) -> tuple[Any, str]:
    """The trial's VRAM plan, read from the model it will train, and what it plans to train.

    Build first, plan second: the plan then sees the weights the backbone actually got, and
    the backbone is built once. The batch size, which the plan may change, is no part of the
    model's graph.

    Returns:
        The ``budget.BudgetDecision`` and the ``trainable`` mode it was planned for.
    """
    from clot_hpo.budget import plan_trial
    from clot_hpo.budget.estimator import profile_model

    trainable = planned_trainable(
        pretrained=hypermodel.pretrained,
        unfreeze_fraction=float(settings["unfreeze_fraction"]),
        freeze_epochs=settings.freeze_epochs,
        epochs=epochs,
    )
    profile = profile_model(
        model.get_layer("backbone"), backbone=settings.backbone, image_size=settings.image_size
    )
    decision = plan_trial(
        backbone=settings.backbone,
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        budget=budget,
        mixed_precision=mixed_precision,
        trainable=trainable,
        optimizer=str(settings["optimizer"]),
        min_batch_size=config.budget.min_batch_size,
        profile=profile,
    )
    return decision, trainable


def _load_trial(task: TrialTask, config: Any, seed: int) -> Any:
    """The Optuna trial the study process created, opened from this process."""
    import optuna

    from clot_hpo.search.optuna_compat import trial_for_other_process
    from clot_hpo.search.pruners import create_pruner
    from clot_hpo.search.samplers import create_sampler
    from clot_hpo.search.storage import open_storage

    study = optuna.load_study(
        study_name=task.study_name,
        storage=_OPENED_STORAGES.pop(task.storage, None) or open_storage(task.storage),
        # Seeded per trial: a fresh process with the study's seed would repeat its samples.
        sampler=create_sampler(config.search.sampler, seed=seed),
        pruner=create_pruner(config.search.pruner, max_epochs=config.training.epochs),
    )
    return trial_for_other_process(study, task.trial_id)


@dataclass
class TrialResult:
    """How a trial ended, and the work left once the study process knows it."""

    outcome: TrialOutcome
    # Run after the outcome is written (the evaluation's intervals and figures); None: nothing.
    after: Callable[[], None] | None = None


def run_trial(task: TrialTask, timer: PhaseTimer | None = None) -> TrialResult:
    """Run one trial end to end and return how it ended (pruning raises ``TrialPruned``).

    ``timer`` receives each phase's wall time (:mod:`clot_hpo.search.timing`).
    """
    import keras
    import optuna

    from clot_hpo.budget import configure_gpu, constraint_value, detect_budget
    from clot_hpo.config import ExperimentConfig
    from clot_hpo.data.cache import DecodedSplits
    from clot_hpo.data.pipeline import make_array_dataset
    from clot_hpo.errors import TrialFailed
    from clot_hpo.evaluate import binary_metrics, choose_threshold, evaluate_trial
    from clot_hpo.models.hypermodel import ClotHyperModel
    from clot_hpo.search.hp import OptunaHyperParameters
    from clot_hpo.search.objectives import get_objective
    from clot_hpo.search.samplers import VRAM_CONSTRAINT
    from clot_hpo.search_space import load_search_space
    from clot_hpo.tracking import NullTracker
    from clot_hpo.tracking.spool import SpoolTracker
    from clot_hpo.train import predict_probabilities, train

    timer = timer or PhaseTimer()
    config = ExperimentConfig.model_validate(task.config)
    seed = config.seed + task.trial_number
    keras.utils.set_random_seed(seed)
    gpu = configure_gpu(config.budget.mixed_precision)
    mixed = bool(gpu.mixed_precision)
    trial = _load_trial(task, config, seed)
    hp = OptunaHyperParameters(trial)
    spaces = {name: load_search_space(path) for name, path in task.spaces.items()}
    hypermodel = ClotHyperModel(
        spaces,
        weights=config.training.weights,
        target_specificity=(
            config.search.target_specificity
            if config.search.objective == "sensitivity_at_specificity"
            else None
        ),
        seed=seed,
    )
    hypermodel.jit_compile = config.training.jit_compile
    settings = hypermodel.settings(hp)
    epochs = max(1, min(config.training.epochs, task.max_epochs))
    trial.set_user_attr("backbone", settings.backbone)
    timer.lap("setup")

    # ----- data: decoded once per image size for the whole study ----------------------------
    data = DecodedSplits(
        task.manifest_path,
        image_size=settings.image_size,
        folder=task.cache_dir if config.data.cache and task.cache_dir else None,
        data_digest=task.data_digest,
    )
    images = {split: data.images(split) for split in ("train", "val", "test")}
    timer.lap("data")

    # ----- the model, then the VRAM budget read from it ---------------------------------------
    model = hypermodel.build(hp)
    trial.set_user_attr("weights_used", hypermodel.weights_used)
    timer.lap("build")
    budget = detect_budget(config.budget)
    decision, trainable = plan_budget(
        config, hypermodel, settings, model, budget=budget, epochs=epochs, mixed_precision=mixed
    )
    trial.set_user_attr("budget_trainable", trainable)
    trial.set_constraint(VRAM_CONSTRAINT, float(constraint_value(decision)))
    for key, value in decision.to_attrs().items():
        trial.set_user_attr(f"budget_{key}", value)
    trial.set_user_attr("budget_source", budget.describe())
    timer.lap("vram_estimate")
    if decision.action == "prune":
        raise optuna.TrialPruned(f"VRAM budget: {decision.reason}")
    batch_size = task.batch_override or decision.batch_size
    accumulation = task.accumulation_override or decision.accumulation_steps
    if accumulation != hypermodel.accumulation_steps:
        # Only the optimizer changes (it accumulates gradients): recompiling costs no tracing.
        hypermodel.accumulation_steps = accumulation
        hypermodel.compile(model, settings)
        timer.lap("build")

    # Never the backend itself: the study process forwards the spool while the next trial trains.
    tracker = SpoolTracker(task.spool_dir) if task.spool_dir else NullTracker()
    tracker.log_params(
        "",
        {
            **hp.values,
            "backbone": settings.backbone,
            "batch_size_run": batch_size,
            "accumulation_steps": accumulation,
            "mixed_precision": mixed,
            "epochs": epochs,
        },
    )

    fault = _injected_fault(task)
    if fault == "oom" and task.attempt == 0:
        import tensorflow as tf

        raise tf.errors.ResourceExhaustedError(None, None, "injected OOM when allocating tensor")
    if fault in ("crash", "segv"):
        os.kill(os.getpid(), signal.SIGKILL if fault == "crash" else signal.SIGSEGV)

    def dataset(split: str, shuffle: bool, rows: Any = None) -> Any:
        return make_array_dataset(
            images[split], data.labels(split), batch_size=batch_size, shuffle=shuffle, seed=seed, rows=rows
        )

    train_ds = dataset(
        "train", True, data.sample_rows("train", config.training.max_train_images, config.seed)
    )
    val_ds = dataset("val", False)
    if task.attempt == 0:
        print(
            f"  trial {task.trial_number} · {settings.backbone} · {settings.image_size}px · batch "
            f"{batch_size}x{accumulation} · weights: {hypermodel.weights_used}",
            flush=True,
        )
    timer.lap("data")

    # ----- train, reporting every epoch -----------------------------------------------------
    objective = get_objective(config.search.objective)
    epochs_run = 0

    def on_epoch_end(epoch: int, logs: dict[str, float], seconds: float) -> None:
        nonlocal epochs_run
        epochs_run = epoch + 1
        timer.lap("first_epoch" if epoch == 0 else "later_epochs")
        # Spooled before the line is printed: the study process forwards the spool on each line.
        tracker.log_epoch("", epoch, logs)
        print(_format_epoch(task.trial_number, epoch, epochs, logs, seconds), flush=True)
        trial.set_user_attr("epochs_run", epochs_run)
        value = logs.get(objective.history_key)
        if value is None or value != value:  # NaN: the run diverged
            raise TrialFailed(f"{objective.history_key} is {value} at epoch {epoch + 1} (diverged?)")
        with warnings.catch_warnings():
            # On the OOM retry, epochs reported by the first attempt are kept, not overwritten.
            warnings.filterwarnings("ignore", message=".*already reported.*")
            trial.report(float(value), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} with {objective.history_key}={value:.4f}")
        timer.restart()  # reporting and the pruning check belong to no epoch

    try:
        history = train(
            hypermodel,
            hp,
            model,
            train_ds,
            val_ds,
            epochs=epochs,
            steps_per_epoch=config.training.steps_per_epoch,
            on_epoch_end=on_epoch_end,
        )
    except optuna.TrialPruned as exc:
        return TrialResult(
            TrialOutcome(
                state="PRUNED",
                reason=str(exc),
                epochs_run=epochs_run,
                batch_size=batch_size,
                accumulation_steps=accumulation,
            )
        )

    # ----- evaluate on validation (threshold) and test, then log -------------------------------
    timer.restart()
    y_val, p_val = predict_probabilities(model, val_ds)
    y_test, p_test = predict_probabilities(model, dataset("test", False))
    # The point figures Optuna and the outcome need (no intervals: cheap), exactly as the
    # evaluation below reports them.
    ev = config.evaluation
    threshold = choose_threshold(y_val, p_val, method=ev.threshold, target_sensitivity=ev.target_sensitivity)
    points = {"threshold": threshold}
    for split, (y, p) in {"val": (y_val, p_val), "test": (y_test, p_test)}.items():
        values = binary_metrics(y, p, threshold=threshold, confidence=ev.confidence_level, n_bootstrap=0)
        points.update(
            {f"{split}_{k}": v for k, v in values.items() if not k.endswith(("_ci_low", "_ci_high"))}
        )

    def evaluate_and_log() -> None:
        """Intervals (bootstrap) and figures, spooled: only a tracked trial has a use for them."""
        samples = None
        # Opt-in: by default no image leaves the machine.
        if ev.log_sample_images:
            samples = np.asarray(images["val"][: ev.log_sample_images], dtype=np.float32)
        report = evaluate_trial(
            y_val, p_val, y_test, p_test, ev, history=history, seed=seed, sample_images=samples, figures=True
        )
        if ev.explanations:  # Grad-CAM overlays of test images, one figure per kind (explanations/)
            from clot_hpo.explain import failure_gallery

            gallery = failure_gallery(model, images["test"], y_test, p_test, float(threshold))
            report.figures.update({f"explanations/{kind}": fig for kind, fig in gallery.items()})
        tracker.log_evaluation("", metrics=report.metrics, artifacts=report.artifacts, figures=report.figures)

    # Without a GPU they come after the outcome, while the next trial starts (the study process
    # waits for them before it closes this trial's run). With one, this process would hold its
    # GPU memory into the next trial's: they come first.
    after = evaluate_and_log if tracker.enabled and not gpu.gpus else None
    if tracker.enabled and after is None:
        evaluate_and_log()
    timer.lap("evaluate")
    if config.tracking.log_model:
        # An uncompiled functional copy (same layers and weights): the saved model is for
        # inference and must not carry training metrics that Keras cannot deserialize
        # (SensitivityAtSpecificity's compile config does not round-trip in Keras 3.15).
        inference = keras.Model(model.inputs, model.outputs, name=model.name)
        tracker.log_model("", inference, image_size=settings.image_size, threshold=float(threshold))
        timer.lap("save_model")
    # The exact (scikit-learn) AUC where we have it, so Optuna's best is what `promote` picks;
    # Keras' binned AUC served for the per-epoch pruning reports.
    value = float(
        points[objective.name] if objective.name == "val_auc" else history[objective.history_key][-1]
    )
    keep = (
        "val_auc",
        "val_accuracy",
        "val_sensitivity",
        "val_specificity",
        "test_auc",
        "test_accuracy",
        "test_sensitivity",
        "test_specificity",
        "threshold",
    )
    outcome = TrialOutcome(
        state="COMPLETE",
        value=value,
        epochs_run=epochs_run,
        batch_size=batch_size,
        accumulation_steps=accumulation,
        metrics={k: float(points[k]) for k in keep if k in points},
    )
    return TrialResult(outcome, after=after)


_interrupted_by: str | None = None


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
            f"usage: python -m {__spec__.name if __spec__ else 'clot_hpo.search.trial_process'} "
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
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    # The study process stops us with SIGTERM (Ctrl-C, or a waiting process it no longer
    # needs); end like a KeyboardInterrupt, and say which signal it was in the reason.
    signal.signal(signal.SIGTERM, _interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored
        signal.signal(signal.SIGINT, _interrupt)
    timer = PhaseTimer(origin=started)
    try:
        task = _read_task(argv, started, timer)
    except KeyboardInterrupt:
        return 130  # stopped before it had a task: there is no trial to record
    if task is None:
        return 0
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    after = None
    try:
        result = run_trial(task, timer)
        outcome, after = result.outcome, result.after
    except KeyboardInterrupt:
        outcome = TrialOutcome(state="FAIL", reason=f"interrupted ({_interrupted_by or 'KeyboardInterrupt'})")
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
