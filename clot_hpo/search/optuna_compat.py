"""Every place clot-hpo reaches past Optuna's public API, each with the reason and upstream link.

Keep workarounds here, and only here: when Optuna changes, this is the one file to check.
Each function says what it works around and when it can go.
"""

from __future__ import annotations

from typing import Any

import optuna

from clot_hpo.util import find_in_chain

__all__ = ["storage_error", "trial_for_other_process", "trial_user_attrs"]


def trial_for_other_process(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """A live ``Trial`` handle, in a trial process, for a trial the study process created.

    Optuna has no public way to attach to an existing RUNNING trial from another process
    (``study.ask()`` always creates one; https://github.com/optuna/optuna/issues/2949), so the
    ``Trial(study, trial_id)`` constructor is used directly. Its RDB storage is wrapped in a
    cache that only knows trials this process has read: reading them all first lets this
    process write params and reports of a trial created elsewhere.
    """
    study.get_trials(deepcopy=False)
    return optuna.trial.Trial(study, trial_id)


def trial_user_attrs(study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    """The user attributes a trial's own process wrote, read fresh from the storage.

    ``trial.user_attrs`` of the study process's handle is its cached copy and misses what the
    child process set; ``Study.get_trials`` would read every trial. Optuna exposes no
    per-trial read on ``Study`` (``_storage``/``_trial_id`` are private).
    """
    return dict(study._storage.get_trial(trial._trial_id).user_attrs)


def storage_error(exc: BaseException, kind: type[BaseException]) -> Any:
    """The storage error (of type ``kind``) behind ``exc``, or None.

    When telling a trial fails because the database is away, Optuna's ``_run_trial`` then
    fails to read the trial back and raises ``UnboundLocalError`` from that failure
    (https://github.com/optuna/optuna/issues/5280): the cause is in the exception chain.
    """
    return find_in_chain(exc, kind)
