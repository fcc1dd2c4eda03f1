"""The pruners' defaults, asserted as behaviour: which epochs a trial is judged after, and by whom."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
import pytest

from clot_hpo.search.pruners import create_pruner, describe_pruner, hyperband_rung_epochs

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_curves(pruner: optuna.pruners.BasePruner, curves: Sequence[Sequence[float]]) -> list[int | None]:
    """Run one trial per curve (one value per epoch, as trial_process reports them, step = epoch - 1).

    Returns:
        Per trial, the epochs it ran before being pruned, or None when it completed.
    """
    study = optuna.create_study(direction="maximize", pruner=pruner)
    pruned_after: list[int | None] = []
    for curve in curves:
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned_after.append(step + 1)
                break
        else:
            study.tell(trial, curve[-1])
            pruned_after.append(None)
    return pruned_after


def flat(value: float, epochs: int) -> list[float]:
    return [value] * epochs


@pytest.mark.parametrize(
    ("max_epochs", "rungs"),
    [
        (1, []),
        (2, [2]),
        (5, [2, 5]),
        (8, [2, 5]),
        (12, [2, 5]),
        (16, [2, 5]),
        (17, [2, 5, 17]),
        (40, [2, 5, 17]),
    ],
)
def test_hyperband_rungs_in_epochs(max_epochs: int, rungs: list[int]) -> None:
    assert hyperband_rung_epochs(max_epochs) == rungs
    assert describe_pruner("hyperband", max_epochs=max_epochs)["rung_epochs"] == rungs


@pytest.mark.parametrize("max_epochs", [8, 12])
def test_hyperband_is_one_bracket_judging_every_trial_after_two_epochs(max_epochs: int) -> None:
    # Each trial is worse than all before it: with one bracket every one is stopped at the first
    # rung. Optuna's own Hyperband defaults (reduction factor 3, 2 or 3 brackets here) would hash
    # some of them into brackets whose first rung comes after 4 or 10 epochs.
    curves = [flat(0.9 - 0.01 * i, max_epochs) for i in range(12)]
    pruned_after = run_curves(create_pruner("hyperband", max_epochs=max_epochs), curves)
    assert pruned_after == [None] + [2] * 11


def test_hyperband_keeps_the_best_quarter_at_each_rung() -> None:
    # Trial values at epoch 2 in arrival order; n trials at a rung keep the best max(1, n // 4).
    at_rung = [0.50, 0.60, 0.55, 0.70, 0.65, 0.62, 0.58, 0.68, 0.69, 0.52]
    curves = [[v] * 2 for v in at_rung]  # two epochs: judged once, at the first rung
    pruned_after = run_curves(create_pruner("hyperband", max_epochs=12), curves)
    promoted = [p is None for p in pruned_after]
    # 1-3: only the best so far (0.50, 0.60 go on; 0.55 not); 4-7: still only the best (0.70);
    # 8 trials: the best two (0.68 is second to 0.70); 9: best two (0.69); 10: best two (0.52 no).
    assert promoted == [True, True, False, True, False, False, False, True, True, False]


def test_hyperband_second_rung_after_five_epochs() -> None:
    good = [0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9, 0.9]
    # The second trial leads at epoch 2 and falls behind by epoch 5: stopped after 5 epochs.
    fades = [0.65, 0.75, 0.76, 0.77, 0.78, 0.79, 0.8, 0.8]
    assert run_curves(create_pruner("hyperband", max_epochs=8), [good, fades]) == [None, 5]


def test_hyperband_never_judges_on_the_first_epoch() -> None:
    # A slow first epoch (random init, BatchNorm still settling) is not held against a trial.
    curves = [flat(0.9, 8), [0.1, 0.95, 0.96, 0.97, 0.97, 0.97, 0.97, 0.97]]
    assert run_curves(create_pruner("hyperband", max_epochs=8), curves) == [None, None]


def test_median_waits_for_two_trials_and_the_second_epoch() -> None:
    pruner = create_pruner("median", max_epochs=6)
    # Two trials complete whatever they report (startup); the third, below their median, is
    # stopped after 2 epochs, not after 1; the fourth, above it, completes.
    curves = [flat(0.9, 6), flat(0.5, 6), flat(0.6, 6), flat(0.8, 6)]
    assert run_curves(pruner, curves) == [None, None, 2, None]
    assert describe_pruner("median", max_epochs=6)["first_judged_after_epochs"] == 2


def test_none_never_prunes() -> None:
    curves = [flat(0.9, 4)] + [flat(0.1, 4)] * 5
    assert run_curves(create_pruner("none", max_epochs=4), curves) == [None] * 6
