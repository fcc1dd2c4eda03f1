"""Fidelities: each epoch's size, the rungs, and a pruner that compares like with like."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from clot_hpo.config import ExperimentConfig
from clot_hpo.config.schema import ProgressiveResizeConfig
from clot_hpo.search.fidelity import (
    RESIZE_START_PARAM,
    fidelity_fractions,
    fidelity_rung_epochs,
    study_rung_epochs,
    trial_sides,
)
from clot_hpo.search.pruners import EPOCH_SIDES_ATTR, RungPruner, create_pruner


def test_epochs_fidelity_is_todays_hyperband() -> None:
    assert fidelity_fractions("epochs", 12, [0.5]) == [1.0] * 12
    assert fidelity_rung_epochs("epochs", 12, [0.5]) == [2, 5]


def test_resolution_rungs_spend_reduced_sizes_then_go_on_at_full_size() -> None:
    assert fidelity_fractions("resolution", 12, [0.25, 0.5]) == [0.25, 0.25, 0.5, 0.5] + [1.0] * 8
    assert fidelity_rung_epochs("resolution", 12, [0.25, 0.5]) == [2, 4]
    # Both: the resolution rungs, then epoch rungs at full size (2 and 5 full-size epochs later).
    assert fidelity_rung_epochs("both", 12, [0.25, 0.5]) == [2, 4, 6, 9]
    # A short training keeps only the sizes that leave a full-size epoch to end on.
    assert fidelity_fractions("resolution", 3, [0.25, 0.5]) == [0.25, 0.25, 1.0]
    assert fidelity_rung_epochs("resolution", 3, [0.25, 0.5]) == [2]
    assert fidelity_fractions("resolution", 2, [0.5]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="fidelity must be one of"):
        fidelity_fractions("pixels", 3, [0.5])


def _progressive(**kwargs: Any) -> ProgressiveResizeConfig:
    return ProgressiveResizeConfig(**kwargs)


def test_trial_sides_combine_progressive_resizing_and_the_fidelity() -> None:
    common: dict[str, Any] = {"image_size": 64, "epochs": 6, "fidelity_sizes": [0.25], "min_side": 16}
    off = _progressive()
    assert trial_sides(fidelity="epochs", progressive=off, values={}, **common) is None
    # Searched values count only when progressive resizing is on.
    assert trial_sides(fidelity="epochs", progressive=off, values={RESIZE_START_PARAM: 0.5}, **common) is None
    on = _progressive(enabled=True, start_fraction=0.5, full_size_epoch=3)
    assert trial_sides(fidelity="epochs", progressive=on, values={}, **common) == [32, 48, 64, 64, 64, 64]
    assert trial_sides(fidelity="epochs", progressive=on, values={RESIZE_START_PARAM: 0.75}, **common) == [
        48,
        56,
        64,
        64,
        64,
        64,
    ]
    assert trial_sides(fidelity="resolution", progressive=off, values={}, **common) == [
        16,
        16,
        64,
        64,
        64,
        64,
    ]
    # Each epoch takes the smaller of the two sides.
    assert trial_sides(fidelity="resolution", progressive=on, values={}, **common) == [16, 16, 64, 64, 64, 64]


def test_the_default_study_keeps_optunas_successive_halving() -> None:
    config = ExperimentConfig()
    assert study_rung_epochs(config) is None
    assert isinstance(
        create_pruner("hyperband", max_epochs=3, rung_epochs=None), optuna.pruners.SuccessiveHalvingPruner
    )
    resolution = ExperimentConfig.model_validate(
        {"training": {"epochs": 8}, "search": {"fidelity": "resolution", "fidelity_sizes": [0.25, 0.5]}}
    )
    assert study_rung_epochs(resolution) == [2, 4]
    assert isinstance(create_pruner("hyperband", max_epochs=8, rung_epochs=[2, 4]), RungPruner)
    assert isinstance(create_pruner("none", max_epochs=8, rung_epochs=[2, 4]), optuna.pruners.NopPruner)
    # Progressive resizing alone keeps the epoch rungs, judged at equal sizes only.
    progressive = ExperimentConfig.model_validate(
        {"training": {"epochs": 12, "progressive_resize": {"enabled": True}}}
    )
    assert study_rung_epochs(progressive) == [2, 5]


def test_fidelity_sizes_must_ascend_below_one() -> None:
    for sizes in ([0.5, 0.25], [0.5, 1.0], [0.5, 0.5]):
        with pytest.raises(ValueError, match="fidelity_sizes"):
            ExperimentConfig.model_validate({"search": {"fidelity_sizes": sizes}})


def _trial(study: optuna.Study, values: list[float], sides: list[int] | None) -> bool:
    """A trial that reports ``values`` (one per epoch) and says whether it is pruned at the last."""
    trial = study.ask()
    if sides is not None:
        trial.set_user_attr(EPOCH_SIDES_ATTR, sides)
    for step, value in enumerate(values):
        trial.report(value, step)
    pruned = trial.should_prune()
    study.tell(
        trial, state=optuna.trial.TrialState.PRUNED if pruned else None, values=None if pruned else values[-1]
    )
    return pruned


def test_the_rung_pruner_compares_trials_at_the_same_step_and_size_only() -> None:
    study = optuna.create_study(direction="maximize", pruner=RungPruner([2], reduction_factor=2))
    low = [16, 16, 64]
    # Four trials at 16 px: the first always goes on; later ones must be in the best half.
    assert not _trial(study, [0.5, 0.90], low)
    assert not _trial(study, [0.5, 0.95], low)
    assert _trial(study, [0.5, 0.70], low)
    # The same value at full size has no competitor at that size: it goes on.
    assert not _trial(study, [0.5, 0.70], [64, 64, 64])
    # Only a rung's step is judged: a bad value elsewhere is kept.
    assert not _trial(study, [0.1], low)


def test_the_rung_pruner_follows_the_direction() -> None:
    study = optuna.create_study(direction="minimize", pruner=RungPruner([1], reduction_factor=2))
    assert not _trial(study, [0.3], None)
    assert not _trial(study, [0.2], None)  # lower loss: better
    assert _trial(study, [0.9], None)
    with pytest.raises(ValueError, match="reduction_factor"):
        RungPruner([1], reduction_factor=1)
