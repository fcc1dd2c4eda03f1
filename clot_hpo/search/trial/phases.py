"""The search's share of a trial before it trains: the Optuna trial, the model, the plan, the data.

:func:`clot_hpo.search.trial.process.run_trial` reads as the trial's table of contents. Each
phase is done by the package that owns it: :mod:`clot_hpo.data` decodes and batches the
images, :mod:`clot_hpo.budget` plans the VRAM, :mod:`clot_hpo.train` fits and predicts,
:mod:`clot_hpo.evaluate` measures, :mod:`clot_hpo.tracking` records. What is left is the
search's own, in three modules by the trial's time: here, opening the Optuna trial and
sampling the model, recording the plan on the trial and building its datasets;
:mod:`~clot_hpo.search.trial.epochs`, reporting each epoch (and pruning), checkpoints and a
resumed trial's replay; :mod:`~clot_hpo.search.trial.evaluation`, the evaluation, the
predictions and the model the trial's run gets.

Imported by the trial process only (it loads Keras, Optuna and TensorFlow).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import optuna

from clot_hpo.budget import GpuInfo, TrialBudget, configure_gpu, plan_trial_budget
from clot_hpo.config import ExperimentConfig
from clot_hpo.data.cache import DecodedSplits
from clot_hpo.data.dicom import DicomSettings
from clot_hpo.data.pipeline import EpochOrder, make_array_dataset
from clot_hpo.models import IMAGENET_UNAVAILABLE, get_backbone_spec
from clot_hpo.models.hypermodel import ClotHyperModel, TrialSettings
from clot_hpo.search.fidelity import study_rung_epochs, trial_sides
from clot_hpo.search.folds import fold_epochs
from clot_hpo.search.hp import OptunaHyperParameters
from clot_hpo.search.ledger import (
    ATTR_SEED,
)
from clot_hpo.search.optuna_compat import trial_for_other_process
from clot_hpo.search.pruners import EPOCH_SIDES_ATTR, create_pruner
from clot_hpo.search.samplers import VRAM_CONSTRAINT, create_sampler
from clot_hpo.search.storage import open_storage
from clot_hpo.search.trial.task import TrialTask
from clot_hpo.search_space import load_search_space
from clot_hpo.tracking import NullTracker, TrialTracker
from clot_hpo.tracking.spool import SpoolTracker
from clot_hpo.tracking.tags import PARAM_CONFIDENCE_LEVEL

# Test hook: "oom:N" raises ResourceExhaustedError in trial N's first attempt; "oom2:N" does so
# after its second epoch (checkpointed); "crash:N" kills trial N's process with SIGKILL;
# "segv:N" with SIGSEGV. Never set by users.
FAULT_ENV = "CLOT_HPO_FAULT_INJECT"


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
        # The level of the intervals the run's metrics carry (the page and the card say it).
        PARAM_CONFIDENCE_LEVEL: setup.config.evaluation.confidence_level,
    }


def injected_fault(task: TrialTask) -> str | None:
    """The fault :data:`FAULT_ENV` injects into this trial (``oom``, ``oom2``, ``crash``...), if any."""
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, _, number = item.partition(":")
        if number.isdigit() and int(number) == task.trial_number:
            return kind
    return None


def inject_fault(task: TrialTask) -> None:
    """Fail as :data:`FAULT_ENV` asks for this trial (tests of the study's recovery only)."""
    fault = injected_fault(task)
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
