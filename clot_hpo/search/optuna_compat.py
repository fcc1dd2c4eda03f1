"""Every place clot-hpo reaches past Optuna's public API, each with the reason and upstream link.

Keep workarounds here, and only here: when Optuna changes, this is the one file to check.
Each function says what it works around and when it can go.
"""

from __future__ import annotations

from typing import Any

import optuna

from clot_hpo.util import find_in_chain

__all__ = ["failed_elsewhere", "storage_error", "trial_for_other_process", "trial_id", "trial_user_attrs"]


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


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of ``trial``, which :func:`trial_for_other_process` opens it by.

    ``Trial.number`` counts within a study; the storage addresses a trial by its id, which
    Optuna keeps private (``_trial_id``; https://github.com/optuna/optuna/issues/2949 asks
    for a public way to hand a trial to another process).
    """
    return int(trial._trial_id)


def trial_user_attrs(study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    """The user attributes a trial's own process wrote, read fresh from the storage.

    ``trial.user_attrs`` of the study process's handle is its cached copy and misses what the
    child process set; ``Study.get_trials`` would read every trial. Optuna exposes no
    per-trial read on ``Study`` (``_storage``/``_trial_id`` are private).
    """
    return dict(study._storage.get_trial(trial._trial_id).user_attrs)


def storage_error(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
    """The storage error (of type ``kind``, or one of the types) behind ``exc``, or None.

    When telling a trial fails because the database is away, Optuna's ``_run_trial`` then
    fails to read the trial back and raises ``UnboundLocalError`` from that failure
    (https://github.com/optuna/optuna/issues/5280): the cause is in the exception chain.
    """
    return find_in_chain(exc, kind)


def failed_elsewhere(exc: ValueError) -> bool:
    """Whether ``study.optimize`` raised because another worker failed the trial meanwhile.

    When the database was away longer than the heartbeat's grace period, another worker marks
    the trial FAIL (and queues its retry); telling it then raises a plain ``ValueError``
    ("Cannot tell a FAIL trial.") that Optuna gives no type of its own, so the message is
    matched (https://github.com/optuna/optuna/issues/5280 covers the storage-error side).
    """
    return "Cannot tell a FAIL trial" in str(exc)
