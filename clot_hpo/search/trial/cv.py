"""A cross-validated trial (``search.cv_folds: k``): k folds, then the refit that is kept.

The non-test data (the study's train and val splits together) is cut into k folds once per
study (:func:`clot_hpo.search.folds.study_folds`, by patient, stratified). Each fold trains a
fresh model of the trial's configuration on the other k - 1 folds and validates on its own.

Pruning: after fold i the trial reports the running mean of its folds' objective (exact AUC for
``val_auc``, else the last epoch's value) at step ``i * E - 1``, E being ``training.epochs``
(also when the epoch budget gave this trial's folds fewer, so that the steps line up):
the step is still "epochs trained so far, minus one", as without folds (docs/pruning.md), and
every step a cross-validated trial reports is a fold's end, with the same meaning in every
trial of the study. No epoch inside a fold is reported: a fold's epoch-2 value next to another
trial's running mean at the same step would compare two different things. The pruner thus
judges a trial first after fold 1 (step E - 1, which passes the pruners' one-step warm-up
whenever E >= 2) and can stop a weak configuration there.

The model kept, as scikit-learn's ``GridSearchCV(refit=True)``: a completed trial's
configuration trained once more on all non-test data, for the same epochs. Its threshold is
chosen on the folds' out-of-fold predictions (each image scored by the fold model that did not
train on it), which are also the run's ``val_*`` evaluation; it is scored on the untouched
test split like any trial. The run's objective metric (``val_auc``) is the folds' mean, with
``val_auc_std`` their spread and ``fold<i>_val_auc`` each fold's.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import keras
import numpy as np

from clot_hpo.budget import TrialBudget
from clot_hpo.data.cache import DecodedSplits, unique_keys
from clot_hpo.data.pipeline import make_array_dataset
from clot_hpo.evaluate import point_metrics
from clot_hpo.search.folds import cv_summary, fold_value
from clot_hpo.search.ledger import HEADLINE_METRICS
from clot_hpo.search.objectives import get_objective
from clot_hpo.search.trial import evaluation
from clot_hpo.search.trial import phases as phase
from clot_hpo.search.trial.process import TrialResult
from clot_hpo.search.trial.task import TrialOutcome
from clot_hpo.search.trial.timing import PhaseTimer
from clot_hpo.tracking import TrialTracker
from clot_hpo.train import class_weights, format_epoch, monitored_value, predict_probabilities, train

POOL = "val"
"""The split name under which the evaluation sees the non-test pool (its out-of-fold predictions)."""


class PooledSplits:
    """The trial's data as a cross-validated trial sees it: the non-test pool and the test split.

    ``images``, ``labels`` and ``keys`` of :data:`POOL` are the train and val splits together
    (train rows first, each in manifest order), with their folds; of ``test``, the test split.
    It stands in for :class:`~clot_hpo.data.cache.DecodedSplits` in the evaluation, so the
    run's ``val_predictions.csv`` holds the out-of-fold predictions of every non-test image.
    """

    def __init__(self, data: DecodedSplits) -> None:
        self.data = data
        # One copy of the non-test images in memory: cross-validation is for small sets.
        self.pool_images = np.concatenate([data.images("train"), data.images("val")])
        self.pool_labels = np.concatenate([data.labels("train"), data.labels("val")])
        self.folds = np.concatenate([data.folds("train"), data.folds("val")])

    def images(self, split: str) -> np.ndarray:
        """The pool's images, or the test split's."""
        return self.pool_images if split == POOL else self.data.images(split)

    def labels(self, split: str) -> np.ndarray:
        """The pool's labels, or the test split's."""
        return self.pool_labels if split == POOL else self.data.labels(split)

    def keys(self, split: str) -> list[str]:
        """The pool's image keys (unique over both splits), or the test split's."""
        if split != POOL:
            return self.data.keys(split)
        return unique_keys(self.data.hashes("train") + self.data.hashes("val"))

    def rows(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Pool rows trained on and validated on in fold ``fold`` (1-based)."""
        return np.flatnonzero(self.folds != fold), np.flatnonzero(self.folds == fold)


class FoldEpochs:
    """``on_epoch_end`` of one fold (or the refit): record, print, and check for divergence.

    Epochs are logged with the fold's prefix (``fold2/val_auc``, ``refit/loss``) at the step
    counted over the whole trial, so each fold's learning curve follows the one before.
    """

    def __init__(
        self, setup: phase.TrialSetup, tracker: TrialTracker, timer: PhaseTimer, prefix: str, offset: int
    ) -> None:
        self.setup, self.tracker, self.timer = setup, tracker, timer
        self.prefix, self.offset = prefix, offset
        self.key = get_objective(setup.config.search.objective).history_key

    def __call__(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        """Handle the fold's epoch ``epoch`` (0-based).

        Raises:
            TrialFailed: the objective's metric (the loss for the refit) is NaN: it diverged.
        """
        step = self.offset + epoch
        self.timer.lap("first_epoch" if step == 0 else "later_epochs")
        self.tracker.log_epoch("", step, {f"{self.prefix}{k}": v for k, v in logs.items()})
        line = format_epoch(self.setup.task.trial_number, epoch, self.setup.epochs, logs, seconds)
        print(f"{line} · {self.prefix.rstrip('/')}", flush=True)
        self.setup.trial.set_user_attr("epochs_run", step + 1)
        monitored_value(logs, self.key if self.key in logs else "loss", epoch)
        self.timer.restart()


class FreshModel:
    """The trial's model back at its initial state for each fold: weights and optimizer reset.

    A new fold on the same compiled model keeps Keras' traced train and predict steps: building
    the model again would trace them again, which costs more than a small fold's training
    (measured: benchmarks/cv_study.py). Only a model whose trainable layers are still those it
    was built with is reset in place; one that a transfer schedule unfroze (``freeze_epochs``)
    is built again from the trial's seed.
    """

    def __init__(self, setup: phase.TrialSetup, model: keras.Model) -> None:
        self.setup = setup
        self.model = model
        if not model.optimizer.built:  # its slots exist before the first step, to be saved
            model.optimizer.build(model.trainable_variables)
        self.trainable = [v.path for v in model.trainable_variables]
        self.weights = [np.array(v) for v in model.variables]
        self.slots = [np.array(v) for v in model.optimizer.variables]

    def __call__(self) -> keras.Model:
        """The model at its initial weights and optimizer state."""
        model = self.model
        if [v.path for v in model.trainable_variables] != self.trainable:
            keras.backend.clear_session()
            keras.utils.set_random_seed(self.setup.seed)
            self.model = self.setup.hypermodel.build(self.setup.hp)
            return self.model
        for variable, value in zip(model.variables, self.weights, strict=True):
            variable.assign(value)
        for variable, value in zip(model.optimizer.variables, self.slots, strict=True):
            variable.assign(value)
        return model


def run_folds(
    setup: phase.TrialSetup,
    data: DecodedSplits,
    model: keras.Model,
    plan: TrialBudget,
    tracker: TrialTracker,
    timer: PhaseTimer,
) -> TrialResult:
    """Train the k folds (pruning between them), then the refit; the trial's result.

    Args:
        setup: the trial (its ``epochs`` are per fold).
        data: the study's decoded splits, with their folds.
        model: the trial's first model, built and planned (fold 1 trains it).
        plan: the trial's VRAM plan, the same for every fold (one model at a time).
        tracker: the trial's tracker.
        timer: the trial's phase timer.
    """
    k = int(setup.config.search.cv_folds or 0)
    objective = get_objective(setup.config.search.objective)
    pool = PooledSplits(data)
    batch, steps = plan.batch_size, setup.config.training.steps_per_epoch
    rule = setup.settings["class_weight"]  # each fold's and the refit's weights from their own labels
    tracker.log_params("", {"cv_folds": k})
    print(f"  trial {setup.task.trial_number} · {k} folds of {len(pool.folds)} images", flush=True)
    timer.lap("data")
    oof = np.full(len(pool.folds), np.nan)
    values: list[float] = []
    done = 0
    fresh = FreshModel(setup, model)
    for fold in range(1, k + 1):
        if fold > 1:
            model = fresh()
            timer.lap("build")
        train_rows, val_rows = pool.rows(fold)
        train_ds = make_array_dataset(
            pool.pool_images,
            pool.pool_labels,
            batch_size=batch,
            shuffle=True,
            seed=setup.seed,
            rows=train_rows,
        )
        val_ds = make_array_dataset(
            pool.pool_images,
            pool.pool_labels,
            batch_size=batch,
            shuffle=False,
            seed=setup.seed,
            rows=val_rows,
        )
        hook = FoldEpochs(setup, tracker, timer, f"fold{fold}/", done)
        history = train(
            setup.hypermodel,
            setup.hp,
            model,
            train_ds,
            val_ds,
            epochs=setup.epochs,
            steps_per_epoch=steps,
            on_epoch_end=hook,
            class_weight=class_weights(pool.pool_labels[train_rows], rule),
        )
        _, p = predict_probabilities(model, val_ds)
        oof[val_rows] = p
        values.append(fold_value(objective, pool.pool_labels[val_rows].astype(int), p, history))
        done += setup.epochs
        running = float(np.mean(values))
        tracker.log_epoch(
            "",
            done - 1,
            {f"fold{fold}_{objective.history_key}": values[-1], f"cv_{objective.history_key}_mean": running},
        )
        setup.trial.set_user_attr("cv_fold_values", values)
        # At the step of a whole fold even when the epoch budget cut this trial's folds short:
        # every trial of the study then reports fold i on the same step.
        setup.trial.report(running, fold * setup.config.training.epochs - 1)
        timer.lap("evaluate")
        if setup.trial.should_prune():
            reason = f"pruned after fold {fold} of {k} with mean {objective.history_key}={running:.4f}"
            return TrialResult(_outcome("PRUNED", plan, done, reason=reason))

    summary = cv_summary(objective, values)
    setup.trial.set_user_attr("cv_std", summary[f"{objective.history_key}_std"])
    model = fresh()  # the refit: all non-test data, the model that is kept
    timer.lap("build")
    everything = make_array_dataset(
        pool.pool_images, pool.pool_labels, batch_size=batch, shuffle=True, seed=setup.seed
    )
    history = train(
        setup.hypermodel,
        setup.hp,
        model,
        everything,
        None,
        epochs=setup.epochs,
        steps_per_epoch=steps,
        on_epoch_end=FoldEpochs(setup, tracker, timer, "refit/", done),
        class_weight=class_weights(pool.pool_labels, rule),
    )
    done += setup.epochs
    timer.restart()
    test_ds = phase.dataset(setup, data, plan, "test")
    predictions = (pool.pool_labels.astype(int), oof, *predict_probabilities(model, test_ds))
    points = point_metrics(*predictions, setup.config.evaluation)  # threshold: out-of-fold
    threshold = float(points["threshold"])
    overrides = dict(summary)
    if objective.history_key in points:  # the pooled out-of-fold value, beside the folds' mean
        overrides[f"{objective.history_key}_oof"] = float(points[objective.history_key])
    evidence = evaluation.record_predictions(setup, pool, predictions)  # their sha256 to the ledger
    after = partial(
        evaluation.evaluate_and_log,
        setup,
        tracker,
        model,
        pool,
        predictions,
        history,
        threshold,
        evidence,
        overrides,
    )
    deferred = tracker.enabled and not setup.gpu.gpus  # as run_trial: after the outcome without a GPU
    if tracker.enabled and not deferred:
        after()
    timer.lap("evaluate")
    if setup.config.tracking.log_model:
        evaluation.log_model(setup, tracker, model, threshold)
        timer.lap("save_model")
    value = summary[objective.history_key]
    metrics = {key: float(v) for key, v in {**points, **summary}.items() if key in HEADLINE_METRICS}
    return TrialResult(
        _outcome("COMPLETE", plan, done, value=value, metrics=metrics), after=after if deferred else None
    )


def _outcome(state: str, plan: TrialBudget, epochs_run: int, **fields: Any) -> TrialOutcome:
    """The outcome after ``epochs_run`` epochs over all folds (the epoch budget counts them all)."""
    return TrialOutcome(
        state=state,
        epochs_run=epochs_run,
        batch_size=plan.batch_size,
        accumulation_steps=plan.accumulation_steps,
        **fields,
    )
