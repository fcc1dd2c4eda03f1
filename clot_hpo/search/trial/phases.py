"""The search's share of a trial: the Optuna trial, what is recorded on it, reports and pruning.

:func:`clot_hpo.search.trial.process.run_trial` reads as the trial's table of contents. Each
phase is done by the package that owns it: :mod:`clot_hpo.data` decodes and batches the
images, :mod:`clot_hpo.budget` plans the VRAM, :mod:`clot_hpo.train` fits and predicts,
:mod:`clot_hpo.evaluate` measures, :mod:`clot_hpo.tracking` records. What is left is the
search's own: opening the Optuna trial and sampling the model, recording the plan on the
trial, reporting each epoch (and pruning), and drawing the evaluation the trial's run gets.

Imported by the trial process only (it loads Keras, Optuna and TensorFlow).
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import keras
import numpy as np
import optuna

from clot_hpo.budget import GpuInfo, TrialBudget, configure_gpu, plan_trial_budget
from clot_hpo.checkpoint_file import TrainingCheckpoint, load_checkpoint
from clot_hpo.config import ExperimentConfig
from clot_hpo.data.cache import DecodedSplits
from clot_hpo.data.dicom import DicomSettings
from clot_hpo.data.pipeline import EpochOrder, make_array_dataset
from clot_hpo.evaluate import evaluate_trial
from clot_hpo.evaluate.catalogue import SPLITS, metric_keys
from clot_hpo.evaluate.predictions import TEST_PREDICTIONS, VAL_PREDICTIONS, trial_predictions
from clot_hpo.models import IMAGENET_UNAVAILABLE, get_backbone_spec
from clot_hpo.models.hypermodel import ClotHyperModel, TrialSettings
from clot_hpo.search.fidelity import study_rung_epochs, trial_sides
from clot_hpo.search.folds import fold_epochs
from clot_hpo.search.hp import OptunaHyperParameters
from clot_hpo.search.ledger import (
    ATTR_MODEL_SHA256,
    ATTR_SEED,
    ATTR_TEST_PREDICTIONS_SHA256,
    ATTR_VAL_PREDICTIONS_SHA256,
    record_checkpoint,
)
from clot_hpo.search.objectives import get_objective
from clot_hpo.search.optuna_compat import trial_for_other_process
from clot_hpo.search.pruners import EPOCH_SIDES_ATTR, create_pruner
from clot_hpo.search.samplers import VRAM_CONSTRAINT, create_sampler
from clot_hpo.search.storage import open_storage
from clot_hpo.search.trial.task import TrialOutcome, TrialTask
from clot_hpo.search.trial.timing import PhaseTimer
from clot_hpo.search_space import load_search_space
from clot_hpo.tracking import NullTracker, TrialTracker
from clot_hpo.tracking.base import to_plain
from clot_hpo.tracking.spool import SpoolTracker
from clot_hpo.train import fixed_size, format_epoch, inference_copy, monitored_value
from clot_hpo.util import file_sha256, text_sha256

# Test hook: "oom:N" raises ResourceExhaustedError in trial N's first attempt; "oom2:N" does so
# after its second epoch (checkpointed); "crash:N" kills trial N's process with SIGKILL;
# "segv:N" with SIGSEGV. Never set by users.
FAULT_ENV = "CLOT_HPO_FAULT_INJECT"

# What a completed trial's outcome carries to the study process (point values, no intervals):
# the threshold and the catalogue's summary metrics of both splits.
OUTCOME_METRICS = (
    "threshold",
    *(k for split in SPLITS for k in metric_keys(split, summary=True, intervals=False)),
)


@dataclass
class TrialSetup:
    """One trial, set up: its config, seed, devices, Optuna trial and the model it samples.

    Attributes:
        task: what the study process asked for.
        config: the experiment config the task carries.
        seed: the trial's seed (the study's plus the trial number).
        gpu: the devices and dtype policy :func:`~clot_hpo.budget.configure_gpu` set.
        trial: the Optuna trial the study process created, opened from this process.
        hp: the trial's hyperparameters (sampled through ``trial``).
        hypermodel: the builder of the trial's model.
        settings: the sampled settings (backbone, image size, batch size...).
        epochs: the epochs this trial runs (the schedule's budget may cap them).
        sides: the image side of each epoch when it changes between epochs (progressive
            resizing, a resolution fidelity: :func:`~clot_hpo.search.fidelity.trial_sides`);
            None: every epoch at ``settings.image_size``.
    """

    task: TrialTask
    config: ExperimentConfig
    seed: int
    gpu: GpuInfo
    trial: optuna.Trial
    hp: OptunaHyperParameters
    hypermodel: ClotHyperModel
    settings: TrialSettings
    epochs: int
    sides: list[int] | None = None

    @property
    def mixed_precision(self) -> bool:
        """Whether training runs in float16."""
        return bool(self.gpu.mixed_precision)


def set_up_trial(task: TrialTask, storage: Any = None) -> TrialSetup:
    """Seed, set the devices, open the Optuna trial and sample the trial's settings.

    Args:
        task: the trial's task.
        storage: the study's storage, opened ahead of the task (None: open it now).
    """
    config = ExperimentConfig.model_validate(task.config)
    # A retry keeps its original's seed: the same dropout, augmentation and data order.
    seed = config.seed + (task.seed_trial if task.seed_trial is not None else task.trial_number)
    keras.utils.set_random_seed(seed)
    gpu = configure_gpu(config.budget.mixed_precision)
    study = optuna.load_study(
        study_name=task.study_name,
        storage=storage or open_storage(task.storage, pooled=False),
        # Seeded per trial: a fresh process with the study's seed would repeat its samples.
        sampler=create_sampler(config.search.sampler, seed=seed),
        pruner=create_pruner(
            config.search.pruner, max_epochs=config.training.epochs, rung_epochs=study_rung_epochs(config)
        ),
    )
    trial = trial_for_other_process(study, task.trial_id)
    trial.set_user_attr(ATTR_SEED, seed)  # the ledger: a checkpoint's seed must match it
    hp = OptunaHyperParameters(trial)
    hypermodel = ClotHyperModel(
        {name: load_search_space(path) for name, path in task.spaces.items()},
        weights=config.training.weights,
        target_specificity=(
            config.search.target_specificity
            if config.search.objective == "sensitivity_at_specificity"
            else None
        ),
        seed=seed,
        class_weight=config.training.class_weight,
    )
    hypermodel.jit_compile = config.training.jit_compile
    hypermodel.imagenet_unavailable = known_weights_failure(study)
    settings = hypermodel.settings(hp)
    trial.set_user_attr("backbone", settings.backbone)
    epochs = fold_epochs(config, task.max_epochs)  # with search.cv_folds: per fold
    sides = trial_sides(
        image_size=settings.image_size,
        epochs=epochs,
        fidelity=config.search.fidelity,
        fidelity_sizes=config.search.fidelity_sizes,
        progressive=config.training.progressive_resize,
        values=settings.values,
        min_side=get_backbone_spec(settings.backbone).min_image_size,
    )
    if sides is not None:
        # One model for every side (global pooling), its weights carried from size to size.
        hypermodel.variable_input_size = True
        trial.set_user_attr(EPOCH_SIDES_ATTR, sides)
    return TrialSetup(task, config, seed, gpu, trial, hp, hypermodel, settings, epochs, sides)


def open_splits(setup: TrialSetup) -> DecodedSplits:
    """The study's splits at the trial's image size, decoded (or mapped from the study's cache)."""
    task, config = setup.task, setup.config
    return DecodedSplits(
        task.manifest_path,
        image_size=setup.settings.image_size,
        folder=task.cache_dir if config.data.cache and task.cache_dir else None,
        data_digest=task.data_digest,
        max_pixels=config.data.max_pixels,
        memory_bytes=config.data.decode_memory_mb * 2**20,
        dicom=DicomSettings.from_config(config.data.dicom),
    ).decode()


def build_model(setup: TrialSetup) -> keras.Model:
    """Build the sampled model and record which weights its backbone got.

    A failed ImageNet download is remembered on the study (:func:`remember_weights_failure`):
    later trials start from random initialization at once, with the same ``weights_used``.
    """
    model = setup.hypermodel.build(setup.hp)
    setup.trial.set_user_attr("weights_used", setup.hypermodel.weights_used)
    remember_weights_failure(setup.trial.study, setup.hypermodel.weights_used)
    return model


# The study's user attribute that holds the `weights_used` of a failed ImageNet download.
IMAGENET_UNAVAILABLE_ATTR = "imagenet_unavailable"


def known_weights_failure(study: optuna.Study) -> str | None:
    """The ``weights_used`` of the study's failed ImageNet download, or None if none failed."""
    value = study.user_attrs.get(IMAGENET_UNAVAILABLE_ATTR)
    return str(value) if value else None


def remember_weights_failure(study: optuna.Study, weights_used: str | None) -> bool:
    """Record on ``study`` that the ImageNet download failed, once; return whether it recorded.

    Offline, every trial would otherwise try the download again (Keras prints its
    ``Downloading data from ...`` line each time) before falling back to random weights. A new
    study tries again: the network may be back by then.
    """
    if not weights_used or not weights_used.startswith(IMAGENET_UNAVAILABLE):
        return False
    if known_weights_failure(study) is not None:
        return False
    study.set_user_attr(IMAGENET_UNAVAILABLE_ATTR, weights_used)
    return True


def plan_vram(setup: TrialSetup, model: keras.Model) -> TrialBudget:
    """The trial's VRAM plan (:func:`~clot_hpo.budget.plan_trial_budget`), recorded on the trial.

    The trial gets the plan's ``budget_*`` attributes and the sampler's VRAM constraint; the
    OOM retry's batch, when the task carries one, overrides the plan's.
    """
    plan = plan_trial_budget(
        setup.config,
        setup.hypermodel,
        setup.settings,
        model,
        epochs=setup.epochs,
        mixed_precision=setup.mixed_precision,
        batch_size=setup.task.batch_override,
        accumulation_steps=setup.task.accumulation_override,
    )
    setup.trial.set_constraint(VRAM_CONSTRAINT, plan.constraint)
    for key, value in plan.attrs().items():
        setup.trial.set_user_attr(key, value)
    return plan


def prune_if_over_budget(plan: TrialBudget) -> None:
    """Prune before training when not even the smallest batch fits.

    Raises:
        optuna.TrialPruned: the plan's action is ``prune``.
    """
    if plan.over_budget:
        raise optuna.TrialPruned(f"VRAM budget: {plan.decision.reason}")


def apply_plan(setup: TrialSetup, model: keras.Model, plan: TrialBudget) -> bool:
    """Compile again when the plan accumulates gradients otherwise; return whether it did.

    Only the optimizer changes (it accumulates gradients): compiling again costs no tracing.
    """
    if plan.accumulation_steps == setup.hypermodel.accumulation_steps:
        return False
    setup.hypermodel.accumulation_steps = plan.accumulation_steps
    setup.hypermodel.compile(model, setup.settings)
    return True


def trial_tracker(task: TrialTask) -> TrialTracker:
    """The trial's tracker: its spool folder, never the backend (the study process forwards it).

    The study process forwards the spool while the next trial trains; without a spool folder
    (an untracked study) nothing is recorded.
    """
    return SpoolTracker(task.spool_dir) if task.spool_dir else NullTracker()


def trial_params(setup: TrialSetup, plan: TrialBudget) -> dict[str, Any]:
    """The parameters the trial's run records: the sampled values and how the trial ran."""
    return {
        **setup.hp.values,
        "backbone": setup.settings.backbone,
        "batch_size_run": plan.batch_size,
        "accumulation_steps": plan.accumulation_steps,
        "mixed_precision": setup.mixed_precision,
        "epochs": setup.epochs,
        # The loss weighting applied, searched or from training.class_weight.
        "class_weight_run": setup.settings["class_weight"],
    }


def _injected_fault(task: TrialTask) -> str | None:
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, _, number = item.partition(":")
        if number.isdigit() and int(number) == task.trial_number:
            return kind
    return None


def inject_fault(task: TrialTask) -> None:
    """Fail as :data:`FAULT_ENV` asks for this trial (tests of the study's recovery only)."""
    fault = _injected_fault(task)
    if fault == "oom" and task.attempt == 0:
        import tensorflow as tf

        raise tf.errors.ResourceExhaustedError(None, None, "injected OOM when allocating tensor")
    if fault in ("crash", "segv"):
        os.kill(os.getpid(), signal.SIGKILL if fault == "crash" else signal.SIGSEGV)


def announce(setup: TrialSetup, plan: TrialBudget) -> None:
    """Print the trial's first line (its first attempt only: a retry says so elsewhere)."""
    if setup.task.attempt == 0:
        size = f"{setup.settings.image_size}px"
        if setup.sides is not None:  # each epoch's side; the VRAM plan is the largest's
            size = f"sizes {'/'.join(str(s) for s in setup.sides)}px (planned at {max(setup.sides)}px)"
        print(
            f"  trial {setup.task.trial_number} · {setup.settings.backbone} · "
            f"{size} · batch {plan.batch_size}x{plan.accumulation_steps} · "
            f"weights: {setup.hypermodel.weights_used}",
            flush=True,
        )


def dataset(setup: TrialSetup, data: DecodedSplits, plan: TrialBudget, split: str) -> Any:
    """A split in the trial's batches; ``train`` shuffled, and capped at the study's sample.

    The training sample is seeded by the study's seed (every trial trains on the same
    images), the shuffle by the trial's.
    """
    if split == "train":
        return data.dataset(
            "train",
            batch_size=plan.batch_size,
            seed=setup.seed,
            shuffle=True,
            max_images=setup.config.training.max_train_images,
            sample_seed=setup.config.seed,
        )
    return data.dataset(split, batch_size=plan.batch_size, seed=setup.seed)


def training_data(setup: TrialSetup, data: DecodedSplits, plan: TrialBudget) -> tuple[Any, EpochOrder]:
    """The training split in the trial's batches, each epoch's order a function of (seed, epoch).

    The sample (``training.max_train_images``) is seeded by the study's seed, as in
    :func:`dataset`; the order by the trial's, through an :class:`EpochOrder` that the
    checkpoint callback tells each epoch's number, so a resumed trial replays the order the
    uninterrupted one had.
    """
    rows = data.sample_rows("train", setup.config.training.max_train_images, setup.config.seed)
    size = len(rows) if rows is not None else len(data.labels("train"))
    # The sides too are a function of the epoch: a resumed trial continues at its schedule's size.
    order = EpochOrder(size, setup.seed, plan.batch_size, sides=setup.sides)
    ds = make_array_dataset(
        data.images("train"),
        data.labels("train"),
        batch_size=plan.batch_size,
        shuffle=True,
        seed=setup.seed,
        rows=rows,
        order=order,
    )
    return ds, order


def training_class_weight(setup: TrialSetup, data: DecodedSplits) -> dict[int, float] | None:
    """The trial's ``class_weight`` (:func:`clot_hpo.train.class_weights`) from its training labels."""
    from clot_hpo.train import class_weights

    labels = np.asarray(data.labels("train"))
    rows = data.sample_rows("train", setup.config.training.max_train_images, setup.config.seed)
    return class_weights(labels if rows is None else labels[np.asarray(rows)], setup.settings["class_weight"])


def validation_data(setup: TrialSetup, data: DecodedSplits, plan: TrialBudget, order: EpochOrder) -> Any:
    """The validation split the epochs report on: at each epoch's side when the side changes.

    A reduced size's validation is that size's (the trial records ``epoch_sides``); the trial's
    final value comes from :func:`dataset` at full size after its last, full-size epoch.
    """
    if setup.sides is None:
        return dataset(setup, data, plan, "val")
    return make_array_dataset(
        data.images("val"),
        data.labels("val"),
        batch_size=plan.batch_size,
        shuffle=False,
        seed=setup.seed,
        sides_from=order,
    )


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
        if self.epochs_run == 2 and setup.task.attempt == 0 and _injected_fault(setup.task) == "oom2":
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
        metrics = {k: float(points[k]) for k in OUTCOME_METRICS if k in points}
        return self.outcome("COMPLETE", plan, value=value, metrics=metrics)


class EvaluatedSplits(Protocol):
    """What the evaluation reads of a trial's data: a ``DecodedSplits``, or a cross-validated pool."""

    def images(self, split: str) -> np.ndarray: ...  # noqa: D102

    def labels(self, split: str) -> np.ndarray: ...  # noqa: D102

    def keys(self, split: str) -> list[str]: ...  # noqa: D102


def evaluate_and_log(
    setup: TrialSetup,
    tracker: TrialTracker,
    model: keras.Model,
    data: EvaluatedSplits,
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    history: dict[str, list[float]],
    threshold: float,
    evidence: dict[str, str],
    overrides: dict[str, float] | None = None,
) -> None:
    """Intervals (bootstrap) and figures, for the trial's run: only a tracked trial needs them.

    Args:
        setup: the trial.
        tracker: receives the evaluation.
        model: the trained model (the failure gallery explains its predictions).
        data: the decoded splits (sample images, the gallery's test images).
        predictions: validation labels and probabilities, then test labels and probabilities.
        history: the training history (drawn as training curves).
        threshold: the decision threshold chosen on validation.
        evidence: the predictions files (:func:`record_predictions`), logged as they are.
        overrides: metrics that replace the evaluation's own (a cross-validated trial's
            objective is its folds' mean, not the pooled out-of-fold value).
    """
    ev = setup.config.evaluation
    y_val, p_val, y_test, p_test = predictions
    samples = None
    # Opt-in: by default no image leaves the machine.
    if ev.log_sample_images:
        samples = np.asarray(data.images("val")[: ev.log_sample_images], dtype=np.float32)
    report = evaluate_trial(
        y_val,
        p_val,
        y_test,
        p_test,
        ev,
        history=history,
        seed=setup.seed,
        sample_images=samples,
        figures=True,
    )
    # Grad-CAM overlays of test images, one figure per kind (explanations/): images of the data,
    # so by default only to a store that keeps them on this machine (evaluation.explanations).
    if setup.config.logs_explanations:
        from clot_hpo.explain import failure_gallery

        # Grad-CAM reads the side from the model: a model built for any side gets the full one.
        explained = fixed_size(model, setup.settings.image_size)
        gallery = failure_gallery(explained, data.images("test"), y_test, p_test, float(threshold))
        report.figures.update({f"explanations/{kind}": fig for kind, fig in gallery.items()})
    tracker.log_evaluation(
        "",
        metrics={**report.metrics, **(overrides or {})},
        artifacts={**report.artifacts, **evidence},
        figures=report.figures,
    )


def record_predictions(
    setup: TrialSetup,
    data: EvaluatedSplits,
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, str]:
    """The trial's predictions files (``key,label,probability`` CSVs), their sha256 in the ledger.

    Recorded on the Optuna trial before anything is uploaded: ``promote`` checks the files it
    downloads from the tracking server against these (:mod:`clot_hpo.search.ledger`).
    """
    evidence = trial_predictions(data, predictions)
    files = ((VAL_PREDICTIONS, ATTR_VAL_PREDICTIONS_SHA256), (TEST_PREDICTIONS, ATTR_TEST_PREDICTIONS_SHA256))
    for name, attr in files:
        text = evidence.get(name)
        setup.trial.set_user_attr(attr, text_sha256(text) if text is not None else None)
    return evidence


def checkpoint_recorder(setup: TrialSetup) -> Callable[[int, Any], None]:
    """``on_written`` of the epoch checkpoint: its sha256 goes to the ledger before the file is in place."""

    def record(epochs_done: int, path: Any) -> None:
        record_checkpoint(setup.trial, epochs_done, file_sha256(path))

    return record


def log_model(setup: TrialSetup, tracker: TrialTracker, model: keras.Model, threshold: float) -> None:
    """Record the trained model for inference (:func:`~clot_hpo.train.inference_copy`).

    Saved once here; its file's sha256 goes to the ledger before the file is spooled.
    """
    import tempfile
    from pathlib import Path

    if not tracker.enabled:  # an untracked study keeps no model
        return
    with tempfile.TemporaryDirectory(prefix="clot-hpo-model-") as tmp:
        path = Path(tmp) / "model.keras"
        inference_copy(model, setup.settings.image_size).save(path)
        setup.trial.set_user_attr(ATTR_MODEL_SHA256, file_sha256(path))
        tracker.log_model("", path, image_size=setup.settings.image_size, threshold=threshold)
