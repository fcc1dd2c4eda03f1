"""One trial, in its own process: ``python -m clot_hpo.search.trial_process TASK.json``.

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
import traceback
import warnings
from pathlib import Path
from typing import Any

from clot_hpo.search.task import TrialOutcome, TrialTask

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


def run_trial(task: TrialTask) -> TrialOutcome:
    """Run one trial end to end and return how it ended (pruning raises ``TrialPruned``)."""
    import keras
    import optuna
    import pandas as pd

    from clot_hpo.budget import configure_gpu, constraint_value, detect_budget, plan_trial
    from clot_hpo.config import ExperimentConfig
    from clot_hpo.data.pipeline import make_dataset
    from clot_hpo.errors import TrialFailed
    from clot_hpo.evaluate import evaluate_trial
    from clot_hpo.models.hypermodel import ClotHyperModel
    from clot_hpo.search.hp import OptunaHyperParameters
    from clot_hpo.search.objectives import get_objective
    from clot_hpo.search.pruners import create_pruner
    from clot_hpo.search.samplers import VRAM_CONSTRAINT, create_sampler
    from clot_hpo.search.storage import open_storage
    from clot_hpo.search_space import load_search_space
    from clot_hpo.tracking import NullTracker
    from clot_hpo.tracking.spool import SpoolTracker
    from clot_hpo.train import predict_probabilities, train

    config = ExperimentConfig.model_validate(task.config)
    seed = config.seed + task.trial_number
    keras.utils.set_random_seed(seed)
    gpu = configure_gpu(config.budget.mixed_precision)
    mixed = bool(gpu.mixed_precision)

    study = optuna.load_study(
        study_name=task.study_name,
        storage=open_storage(task.storage),
        # Seeded per trial: a fresh process with the study's seed would repeat its samples.
        sampler=create_sampler(config.search.sampler, seed=seed),
        pruner=create_pruner(config.search.pruner, max_epochs=config.training.epochs),
    )
    # Optuna wraps RDB storages in a cache that only knows trials it has read; read them all
    # so this process may write params of a trial another process created.
    study.get_trials(deepcopy=False)
    trial = optuna.trial.Trial(study, task.trial_id)
    hp = OptunaHyperParameters(trial)
    spaces = {name: load_search_space(path) for name, path in task.spaces.items()}
    hypermodel = ClotHyperModel(
        spaces, weights=config.training.weights,
        target_specificity=(config.search.target_specificity
                            if config.search.objective == "sensitivity_at_specificity" else None),
        seed=seed,
    )
    settings = hypermodel.settings(hp)
    epochs = max(1, min(config.training.epochs, task.max_epochs))
    trial.set_user_attr("backbone", settings.backbone)

    # ----- VRAM budget: size the configuration before a single step runs -----------------
    # Only a pretrained base is ever frozen (a random one is trained whole): plan for that.
    pretrained = str(config.training.weights).lower() not in ("none", "") and settings.backbone != "tiny_cnn"
    head_only = pretrained and (float(settings["unfreeze_fraction"]) <= 0 or settings.freeze_epochs >= epochs)
    budget = detect_budget(config.budget)
    decision = plan_trial(
        backbone=settings.backbone,
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        budget=budget,
        mixed_precision=mixed,
        trainable="head" if head_only else "all",
        optimizer=str(settings["optimizer"]),
        min_batch_size=config.budget.min_batch_size,
    )
    trial.set_constraint(VRAM_CONSTRAINT, float(constraint_value(decision)))
    for key, value in decision.to_attrs().items():
        trial.set_user_attr(f"budget_{key}", value)
    trial.set_user_attr("budget_source", budget.describe())
    if decision.action == "prune":
        raise optuna.TrialPruned(f"VRAM budget: {decision.reason}")
    batch_size = task.batch_override or decision.batch_size
    accumulation = task.accumulation_override or decision.accumulation_steps
    hypermodel.accumulation_steps = accumulation

    # Never the backend itself: the study process forwards the spool while the next trial trains.
    tracker = SpoolTracker(task.spool_dir) if task.spool_dir else NullTracker()
    tracker.log_params("", {
        **hp.values, "backbone": settings.backbone, "batch_size_run": batch_size,
        "accumulation_steps": accumulation, "mixed_precision": mixed, "epochs": epochs,
    })

    fault = _injected_fault(task)
    if fault == "oom" and task.attempt == 0:
        import tensorflow as tf

        raise tf.errors.ResourceExhaustedError(None, None, "injected OOM when allocating tensor")
    if fault in ("crash", "segv"):
        os.kill(os.getpid(), signal.SIGKILL if fault == "crash" else signal.SIGSEGV)

    # ----- data ------------------------------------------------------------------------------
    manifest = pd.read_csv(task.manifest_path)
    splits = {name: part for name, part in manifest.groupby("split")}
    train_part = splits["train"]
    if config.training.max_train_images and len(train_part) > config.training.max_train_images:
        train_part = train_part.sample(n=config.training.max_train_images, random_state=config.seed)

    def dataset(part: pd.DataFrame, shuffle: bool) -> Any:
        return make_dataset(
            list(part["path"]), list(part["label"]), image_size=settings.image_size,
            batch_size=batch_size, shuffle=shuffle, seed=seed, cache=config.data.cache,
        )

    train_ds, val_ds = dataset(train_part, True), dataset(splits["val"], False)
    model = hypermodel.build(hp)
    trial.set_user_attr("weights_used", hypermodel.weights_used)
    if task.attempt == 0:
        print(f"  trial {task.trial_number} · {settings.backbone} · {settings.image_size}px · batch "
              f"{batch_size}x{accumulation} · weights: {hypermodel.weights_used}", flush=True)

    # ----- train, reporting every epoch -----------------------------------------------------
    objective = get_objective(config.search.objective)
    epochs_run = 0

    def on_epoch_end(epoch: int, logs: dict[str, float], seconds: float) -> None:
        nonlocal epochs_run
        epochs_run = epoch + 1
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
            raise optuna.TrialPruned(
                f"pruned at epoch {epoch + 1} with {objective.history_key}={value:.4f}"
            )

    try:
        history = train(
            hypermodel, hp, model, train_ds, val_ds, epochs=epochs,
            steps_per_epoch=config.training.steps_per_epoch, on_epoch_end=on_epoch_end,
        )
    except optuna.TrialPruned as exc:
        return TrialOutcome(state="PRUNED", reason=str(exc), epochs_run=epochs_run,
                            batch_size=batch_size, accumulation_steps=accumulation)

    # ----- evaluate on validation (threshold) and test, then log -------------------------------
    y_val, p_val = predict_probabilities(model, val_ds)
    y_test, p_test = predict_probabilities(model, dataset(splits["test"], False))
    samples = None
    # Opt-in: by default no image leaves the machine.
    if tracker.enabled and config.evaluation.log_sample_images:
        from clot_hpo.data.pipeline import load_image_batch

        samples = load_image_batch(list(splits["val"]["path"][: config.evaluation.log_sample_images]),
                                   settings.image_size)
    report = evaluate_trial(y_val, p_val, y_test, p_test, config.evaluation, history=history, seed=seed,
                            sample_images=samples, figures=tracker.enabled)
    tracker.log_evaluation("", metrics=report.metrics, artifacts=report.artifacts,
                           figures=report.figures)
    if config.tracking.log_model:
        # An uncompiled functional copy (same layers and weights): the saved model is for
        # inference and must not carry training metrics that Keras cannot deserialize
        # (SensitivityAtSpecificity's compile config does not round-trip in Keras 3.15).
        inference = keras.Model(model.inputs, model.outputs, name=model.name)
        tracker.log_model("", inference, image_size=settings.image_size,
                          threshold=float(report.metrics["threshold"]))
    # The exact (scikit-learn) AUC where we have it, so Optuna's best is what `promote` picks;
    # Keras' binned AUC served for the per-epoch pruning reports.
    value = float(report.metrics.get(objective.name, history[objective.history_key][-1])
                  if objective.name == "val_auc" else history[objective.history_key][-1])
    keep = ("val_auc", "val_accuracy", "val_sensitivity", "val_specificity",
            "test_auc", "test_accuracy", "test_sensitivity", "test_specificity", "threshold")
    return TrialOutcome(
        state="COMPLETE", value=value, epochs_run=epochs_run, batch_size=batch_size,
        accumulation_steps=accumulation,
        metrics={k: float(report.metrics[k]) for k in keep if k in report.metrics},
    )


def main(argv: list[str] | None = None) -> int:
    """Run the task file named in ``argv`` and write its outcome; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = TrialTask.load(argv[0])
    # The study process stops us with SIGTERM on Ctrl-C; end like a KeyboardInterrupt.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        outcome = run_trial(task)
    except KeyboardInterrupt:
        outcome = TrialOutcome(state="FAIL", reason="interrupted")
    except Exception as exc:  # noqa: BLE001 - every failure becomes the trial's recorded reason
        import optuna

        if isinstance(exc, optuna.TrialPruned):
            outcome = TrialOutcome(state="PRUNED", reason=str(exc))
        else:
            from clot_hpo.budget import is_oom_error

            detail = traceback.format_exc(limit=-3)
            log.debug(detail)
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            outcome = TrialOutcome(
                state="FAIL",
                reason=f"{type(exc).__name__}: {first_line}"[:500],
                oom=is_oom_error(exc),
            )
            if os.environ.get("CLOT_HPO_DEBUG"):
                print(detail, file=sys.stderr)
    outcome.save(task.result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
