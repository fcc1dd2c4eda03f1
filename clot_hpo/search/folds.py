"""Cross-validation's share of the study process: the folds and the epochs a trial may take.

Light on purpose (no Keras): the study process imports it. The fold loop itself, run in each
trial's process, is :mod:`clot_hpo.search.trial.cv`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clot_hpo.config import ExperimentConfig
from clot_hpo.search.objectives import Objective

if TYPE_CHECKING:
    import optuna


def trial_epochs(config: ExperimentConfig) -> int:
    """Epochs one trial may train in all: ``training.epochs``, times (folds + the refit) with folds.

    The study's epoch budget (``search.max_total_epochs``) counts every fold's epochs: a
    cross-validated trial records them all as its ``epochs_run``.
    """
    folds = config.search.cv_folds
    return config.training.epochs * (folds + 1 if folds else 1)


def fold_epochs(config: ExperimentConfig, max_epochs: int) -> int:
    """Epochs per fold (and for the refit) when a trial may train ``max_epochs`` in all."""
    folds = config.search.cv_folds or 0
    return max(1, min(config.training.epochs, max_epochs // (folds + 1)))


def study_folds(config: ExperimentConfig, manifest: pd.DataFrame) -> np.ndarray:
    """The study's fold of each manifest row (0: the test split), seeded by the study's seed."""
    from clot_hpo.data.folds import assign_folds

    if not config.search.cv_folds:
        raise ValueError("study_folds needs search.cv_folds set")
    return assign_folds(
        manifest,
        config.search.cv_folds,
        seed=config.seed,
        class_names={1: config.data.positive_label, 0: config.data.negative_label},
        group_name=config.data.group_column or "group",
    )


def fold_value(
    objective: Objective, labels: np.ndarray, probabilities: np.ndarray, history: dict[str, Any]
) -> float:
    """A fold's objective: the exact AUC of its predictions for ``val_auc``, else its last epoch's value."""
    if objective.name == "val_auc":
        from clot_hpo.evaluate.metrics import fast_roc_auc  # scikit-learn: the trial process only

        return float(fast_roc_auc(labels, probabilities))
    return float(history[objective.history_key][-1])


def cv_summary(objective: Objective, values: list[float]) -> dict[str, float]:
    """The folds' metrics for the trial's run: each fold's, their mean (the objective) and spread."""
    key = objective.history_key
    out = {f"fold{i}_{key}": v for i, v in enumerate(values, start=1)}
    out[key] = float(np.mean(values))
    # The sample standard deviation (ddof=1): the folds are a sample of possible splits.
    out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


STUDY_FOLDS_ATTR = "cv_folds"
"""The study's user attribute: the ``search.cv_folds`` its trials were valued with (0: none)."""


def check_study_folds(study: optuna.Study, config: ExperimentConfig) -> None:
    """Record the study's ``search.cv_folds``, or refuse another one when resuming it.

    A fold mean and a single validation split's value do not rank together, nor do the means of
    3 and 5 folds: one study keeps one setting.

    Args:
        study: the Optuna study, created or loaded.
        config: the experiment config.

    Raises:
        ConfigError: the study was run with another ``search.cv_folds``.
    """
    from optuna.trial import TrialState

    from clot_hpo.errors import ConfigError

    folds = config.search.cv_folds or 0
    recorded = study.user_attrs.get(STUDY_FOLDS_ATTR)
    if recorded is None:
        # A study that ran trials before the setting was recorded ran them without folds.
        started = study.get_trials(
            deepcopy=False,
            states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING),
        )
        recorded = 0 if started else folds
        study.set_user_attr(STUDY_FOLDS_ATTR, recorded)
    if int(recorded) != folds:
        before, now = (f"{n}" if n else "null (no folds)" for n in (int(recorded), folds))
        raise ConfigError(
            f"search.cv_folds: study {config.study_name!r} was run with {before}, but got {now}; "
            "values of differently validated trials do not compare: use another --study-name"
        )
