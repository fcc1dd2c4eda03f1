"""The study run's headline: its best completed trial and its trial counts, as metrics.

MLflow's runs table shows a study as one collapsed parent row; without metrics of its own
that row says nothing until it is expanded. :func:`study_headline` condenses the trial runs
into a few metrics for the parent: ``best_<objective>`` (``best_val_auc``), ``best_trial``,
the best trial's ``test_auc`` with its interval, and ``n_trials_complete`` / ``_pruned`` /
``_failed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from clot_hpo.tracking.tags import (
    BEST_PREFIX,
    DIRECTIONS,
    METRIC_BEST_TRIAL,
    METRIC_N_COMPLETE,
    METRIC_N_FAILED,
    METRIC_N_PRUNED,
    METRIC_VALUE,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
)
from clot_hpo.util import finite_float, objective_value, rank_trials

_COUNTED = {"COMPLETE": METRIC_N_COMPLETE, "PRUNED": METRIC_N_PRUNED, "FAIL": METRIC_N_FAILED}


def _trial_number(run: Any) -> int | None:
    raw = run.data.tags.get(TAG_TRIAL_NUMBER, "")
    return int(raw) if raw.lstrip("-").isdigit() else None


def headline_metric_names(objective: str | None, headline: Sequence[str] = ()) -> list[str]:
    """Every headline metric :func:`study_headline` may log, in the order a reader wants them."""
    names = [f"{BEST_PREFIX}{objective or METRIC_VALUE}", *(f"{BEST_PREFIX}{key}" for key in headline)]
    return [*names, METRIC_BEST_TRIAL, *_COUNTED.values()]


def study_headline(
    trial_runs: Iterable[Any], *, objective: str | None, direction: str | None, headline: Sequence[str] = ()
) -> dict[str, float]:
    """The parent run's headline metrics from its trial runs (MLflow ``Run`` entities).

    Args:
        trial_runs: the study's child runs; each counts once by its ``optuna.trial_state``
            (runs still open have none and are not counted).
        objective: the metric the study optimizes (``val_auc``); names ``best_<objective>``.
        direction: ``"maximize"`` or ``"minimize"``; without it no best trial is named.
        headline: the best trial's metrics to copy (``test_auc``, ``test_auc_ci_low``, ...),
            from the metric catalogue.

    Returns:
        The metrics to log; ``best_*`` only when a completed trial has a finite value.
        Ties go to the lower trial number, as in Optuna.
    """
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"`direction` must be one of {list(DIRECTIONS)}, but got {direction!r}")
    runs = list(trial_runs)
    states = Counter(run.data.tags.get(TAG_TRIAL_STATE) for run in runs)
    out: dict[str, float] = {name: float(states.get(state, 0)) for state, name in _COUNTED.items()}
    if direction is None:
        return out
    complete = [run for run in runs if run.data.tags.get(TAG_TRIAL_STATE) == "COMPLETE"]
    ranked = rank_trials(
        complete,
        value=lambda run: objective_value(run.data.metrics, objective),
        number=_trial_number,
        direction=direction,
    )
    if not ranked:
        return out
    best = ranked[0]
    value = objective_value(best.data.metrics, objective)
    assert value is not None  # rank_trials keeps only trials with a value
    out[f"{BEST_PREFIX}{objective or METRIC_VALUE}"] = value
    number = _trial_number(best)
    if number is not None:
        out[METRIC_BEST_TRIAL] = float(number)
    for name in headline:
        metric = finite_float(best.data.metrics.get(name))
        if metric is not None:
            out[f"{BEST_PREFIX}{name}"] = metric
    return out


__all__ = ["headline_metric_names", "study_headline"]
