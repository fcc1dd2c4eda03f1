"""Hyperparameter importances of a finished study, from its recorded trials alone.

``clot-hpo report`` works from what tracking stored, not from the Optuna storage (which may
be another machine's SQLite file): it hands over each completed trial's parameters and
objective value, and :func:`param_importances` rebuilds an in-memory Optuna study from them
and asks :func:`optuna.importance.get_param_importances` (fANOVA, seeded). Distributions are
read from the values seen: numbers span their observed range (log scale when every value is
positive and they cover more than a decade), anything else is categorical. A parameter with
a single value carries no information and is left out, as is one absent from some trials
(conditional on another choice): Optuna's evaluators need the same parameters in every trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from clot_hpo.util import finite_float

MIN_TRIALS = 2


def _distribution(values: list[Any]) -> BaseDistribution | None:
    numbers = [finite_float(v) for v in values]
    if all(n is not None for n in numbers):
        low, high = min(numbers), max(numbers)  # type: ignore[type-var]
        if low == high:
            return None
        log = low > 0 and high / low > 10.0  # type: ignore[operator]
        return FloatDistribution(float(low), float(high), log=log)  # type: ignore[arg-type]
    choices = sorted({str(v) for v in values})
    return CategoricalDistribution(choices) if len(choices) > 1 else None


def param_importances(
    trials: Sequence[tuple[Mapping[str, Any], float]], *, direction: str = "maximize", seed: int = 0
) -> dict[str, float]:
    """Each parameter's share of the objective's variance (fANOVA), largest first.

    Args:
        trials: ``(params, value)`` of each completed trial.
        direction: the study's direction (``maximize`` or ``minimize``).
        seed: the evaluator's random forest seed (the same trials give the same answer).

    Returns:
        Parameter -> importance (the shares add up to 1); empty with fewer than
        :data:`MIN_TRIALS` trials or no parameter that varies in every trial.
    """
    usable = [(dict(p), float(v)) for p, v in trials if finite_float(v) is not None]
    if len(usable) < MIN_TRIALS:
        return {}
    shared = set.intersection(*(set(p) for p, _ in usable))
    distributions = {
        name: dist
        for name in sorted(shared)
        if (dist := _distribution([p[name] for p, _ in usable])) is not None
    }
    if not distributions:
        return {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory"
    try:
        study = optuna.create_study(direction="minimize" if direction == "minimize" else "maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for params, value in usable:
        cast = {
            name: (float(params[name]) if isinstance(dist, FloatDistribution) else str(params[name]))
            for name, dist in distributions.items()
        }
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=value, params=cast, distributions=distributions)
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {str(k): float(v) for k, v in importances.items()}


__all__ = ["MIN_TRIALS", "param_importances"]
