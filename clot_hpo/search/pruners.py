"""Pruners: ``create_pruner`` builds each of ``search.pruner``'s choices; ``describe_pruner`` explains it.

A trial reports its validation metric after every epoch as step ``epoch - 1`` (0-based), so an
Optuna pruner that acts at step ``s`` judges the trial after ``s + 1`` epochs;
``describe_pruner`` speaks in epochs. Why the defaults are what they are: docs/pruning.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from clot_hpo.config.schema import PrunerName
from clot_hpo.errors import refuse_choice

# Hyperband, as one bracket (its most aggressive one: asynchronous successive halving).
# Optuna's HyperbandPruner(min_resource=1, reduction_factor=3) splits a study into
# floor(log3(epochs)) + 1 brackets (2 for 8 epochs, 3 for 12), and under sequential trials the
# first trials to reach each rung of each bracket are always promoted: with 12 to 40 trials
# every extra bracket mostly buys more full-length trials, not a better hedge. Measured in
# benchmarks/pruning_efficiency.py; the reasoning in docs/pruning.md.
HYPERBAND_MIN_RESOURCE = 1
"""First rung at step 1, i.e. after 2 epochs: epoch 1 alone (random init, BatchNorm statistics
still settling, or a base still frozen) ranks trials poorly."""
HYPERBAND_REDUCTION_FACTOR = 4
"""Keep the top quarter at each rung (Optuna's successive-halving default, ASHA's eta): rungs
after 2 and 5 epochs for 6 to 16 epochs, then 17, 65..."""

EPOCH_SIDES_ATTR = "epoch_sides"
"""A trial's user attribute: the image side (px) of each of its epochs, in order (recorded when
the side changes between epochs; docs/pruning.md, fidelities)."""

# Median pruning: gentler, for users who would rather keep slow starters.
MEDIAN_STARTUP_TRIALS = 2
"""Completed trials before the median prunes at all: few, so that a 6-trial study can prune
(Optuna's default of 5 leaves a study that small nothing to prune)."""
MEDIAN_WARMUP_STEPS = 1
"""Never on epoch 1 alone, like Hyperband's first rung."""


def _fraction_at(trial: optuna.trial.FrozenTrial, step: int) -> float | None:
    """The fraction of its full side ``trial`` ran epoch ``step + 1`` at (1.0 when it recorded none)."""
    sides = trial.user_attrs.get(EPOCH_SIDES_ATTR)
    if not sides:
        return 1.0
    if step >= len(sides):
        return None
    return round(float(sides[step]) / float(max(sides)), 4)


class RungPruner(optuna.pruners.BasePruner):
    """Successive halving at given epochs, comparing trials at the same step and the same size only.

    At a rung, a trial goes on if it is among the best ``max(1, n // reduction_factor)`` of the
    ``n`` trials (itself included) that reported the same step at the same fraction of their
    side, Optuna's asynchronous rule (``SuccessiveHalvingPruner``), with the rungs placed where
    the fidelity puts them rather than at ``min_resource * reduction_factor ** k``.

    Args:
        rung_epochs: the epochs (1-based) after which a trial is judged.
        reduction_factor: one in ``reduction_factor`` goes on.
    """

    def __init__(
        self, rung_epochs: Sequence[int], reduction_factor: int = HYPERBAND_REDUCTION_FACTOR
    ) -> None:
        if reduction_factor < 2:
            raise ValueError(f"`reduction_factor >= 2` must hold, but got {reduction_factor}")
        self.rung_steps = frozenset(int(e) - 1 for e in rung_epochs)
        self.reduction_factor = int(reduction_factor)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Whether ``trial`` stops at its last reported step (a rung's), else False."""
        step = trial.last_step
        if step is None or step not in self.rung_steps:
            return False
        value = trial.intermediate_values[step]
        fraction = _fraction_at(trial, step)
        states = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.RUNNING,
        )
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number
            and step in t.intermediate_values
            and _fraction_at(t, step) == fraction
        ]
        keep = max(1, (len(others) + 1) // self.reduction_factor)
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        better = sum((v > value) if maximize else (v < value) for v in others if v == v)
        return better >= keep


def create_pruner(
    name: PrunerName, *, max_epochs: int, rung_epochs: Sequence[int] | None = None
) -> optuna.pruners.BasePruner:
    """Build pruner ``name`` (``search.pruner``) for trials of at most ``max_epochs`` epochs.

    Args:
        rung_epochs: where a fidelity other than epochs puts the ``hyperband`` pruner's rungs
            (:func:`clot_hpo.search.fidelity.fidelity_rung_epochs`): a :class:`RungPruner`.
    """
    match name:
        case "hyperband" if rung_epochs is not None:
            return RungPruner(rung_epochs)
        case "hyperband":
            # One bracket of Hyperband is successive halving with min_early_stopping_rate=0.
            # Optuna's HyperbandPruner takes no bracket count, and once initialised it also
            # narrows what the sampler sees to the trial's own bracket; this pruner leaves TPE
            # the whole history.
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=HYPERBAND_MIN_RESOURCE,
                reduction_factor=HYPERBAND_REDUCTION_FACTOR,
                min_early_stopping_rate=0,
            )
        case "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_STEPS
            )
        case "none":
            return optuna.pruners.NopPruner()
        case _:
            refuse_choice("search.pruner", PrunerName, name)


def hyperband_rung_epochs(max_epochs: int) -> list[int]:
    """After how many epochs the ``hyperband`` pruner judges a trial of ``max_epochs`` epochs.

    Successive halving's rung ``r`` is step ``min_resource * reduction_factor ** r``; a rung at
    or past the last step never comes.
    """
    epochs = []
    rung = 0
    while (step := HYPERBAND_MIN_RESOURCE * HYPERBAND_REDUCTION_FACTOR**rung) <= max_epochs - 1:
        epochs.append(step + 1)
        rung += 1
    return epochs


def describe_pruner(name: PrunerName, *, max_epochs: int) -> dict[str, Any]:
    """What pruner ``name`` does with trials of ``max_epochs`` epochs, for logs and benchmarks."""
    create_pruner(name, max_epochs=max_epochs)  # validates the name
    if name == "hyperband":
        return {
            "name": name,
            "brackets": 1,
            "min_resource": HYPERBAND_MIN_RESOURCE,
            "reduction_factor": HYPERBAND_REDUCTION_FACTOR,
            "rung_epochs": hyperband_rung_epochs(max_epochs),
            # Optuna's rule under sequential trials: of the n trials that reached a rung so far
            # (this one included), the best max(1, n // reduction_factor) go on.
            "keeps": f"the best max(1, n // {HYPERBAND_REDUCTION_FACTOR}) of the n trials at a rung so far",
        }
    if name == "median":
        return {
            "name": name,
            "n_startup_trials": MEDIAN_STARTUP_TRIALS,
            "n_warmup_steps": MEDIAN_WARMUP_STEPS,
            "first_judged_after_epochs": MEDIAN_WARMUP_STEPS + 1,
        }
    return {"name": name}
