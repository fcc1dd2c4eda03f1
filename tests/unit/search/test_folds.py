"""Cross-validation's study-side rules: the config key, epochs budget per trial, fold summary."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from clot_hpo.config import ExperimentConfig
from clot_hpo.search.folds import cv_summary, fold_epochs, fold_value, trial_epochs
from clot_hpo.search.objectives import get_objective


def _config(**search: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"training": {"epochs": 4}, "search": search})


def test_cv_folds_is_off_by_default_and_at_least_two_when_set() -> None:
    assert _config().search.cv_folds is None
    assert _config(cv_folds=5).search.cv_folds == 5
    with pytest.raises(ValidationError, match=r"`cv_folds >= 2` must hold .* but got 1"):
        _config(cv_folds=1)


def test_the_epoch_budget_counts_every_fold_and_the_refit() -> None:
    assert trial_epochs(_config()) == 4
    assert trial_epochs(_config(cv_folds=5)) == 4 * 6
    # The whole trial's allowance shared between the folds and the refit.
    assert fold_epochs(_config(cv_folds=5), 24) == 4
    assert fold_epochs(_config(cv_folds=5), 12) == 2
    assert fold_epochs(_config(cv_folds=5), 3) == 1  # never less than one epoch
    assert fold_epochs(_config(), 3) == 3  # without folds: as before, capped by the budget


def test_the_summary_is_each_fold_their_mean_and_sample_spread() -> None:
    summary = cv_summary(get_objective("val_auc"), [0.8, 0.9, 1.0])
    assert summary["fold1_val_auc"] == 0.8 and summary["fold3_val_auc"] == 1.0
    assert summary["val_auc"] == pytest.approx(0.9)
    assert summary["val_auc_std"] == pytest.approx(0.1)  # ddof=1
    assert cv_summary(get_objective("val_loss"), [0.5])["val_loss_std"] == 0.0


def test_a_fold_is_valued_by_exact_auc_or_its_last_epoch() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    history = {"val_auc": [0.1, 0.2], "val_loss": [0.9, 0.7]}
    assert fold_value(get_objective("val_auc"), y, p, history) == pytest.approx(0.75)
    assert fold_value(get_objective("val_loss"), y, p, history) == 0.7


def test_a_study_keeps_the_folds_it_was_run_with() -> None:
    import optuna

    from clot_hpo.errors import ConfigError
    from clot_hpo.search.folds import check_study_folds

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 1.0})  # queued, not run: the study has run nothing yet
    check_study_folds(study, _config(cv_folds=5))
    check_study_folds(study, _config(cv_folds=5))  # resumed alike
    with pytest.raises(ConfigError, match=r"was run with 5, but got null \(no folds\)"):
        check_study_folds(study, _config())
    with pytest.raises(ConfigError, match="was run with 5, but got 3"):
        check_study_folds(study, _config(cv_folds=3))
    # A study that ran trials before the setting was recorded ran them without folds.
    older = optuna.create_study(direction="maximize")
    older.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(ConfigError, match=r"was run with null \(no folds\), but got 5"):
        check_study_folds(older, _config(cv_folds=5))


@pytest.mark.parametrize(
    "overrides",
    [{"search.fidelity": "resolution"}, {"training.progressive_resize.enabled": True}],
)
def test_folds_refuse_a_size_fidelity_naming_both_keys(overrides: dict[str, object]) -> None:
    # Folds report once per fold at full size: a size schedule or reduced-size rungs would not be judged.
    from clot_hpo.config import ExperimentConfig

    with pytest.raises(ValueError, match=r"search\.cv_folds trains every fold at full size"):
        ExperimentConfig.model_validate(_nested({"search.cv_folds": 3, **overrides}))
    ExperimentConfig.model_validate(_nested(overrides))  # without folds: accepted


def _nested(flat: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[leaf] = value
    return out
